"""The patient's consent changes on their way to the chain: poll one until the chain has recorded it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from node.portal import relays, views
from node.portal.deps import Me
from node.portal.schemas import ERRORS, ChangeOut

router = APIRouter(prefix="/api/changes", tags=["studies"], responses=ERRORS)


@router.get("/{change_id}", response_model=ChangeOut)
def get_change(change_id: Annotated[int, Path(ge=1, le=2**62)], me: Me) -> ChangeOut:
    """"sent", then "recorded" (with the block, and whether the chain shows the choice at that block) or "failed"."""
    row = relays.change_of(me.db, me.account, change_id)
    return views.change_out(me.ledger, row, me.pseudonym)
