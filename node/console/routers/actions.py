"""The action log: who did what, when, and how it ended."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from federation.web import auth
from federation.web.models import aware
from node.console.deps import CurrentStaff, Db
from node.console.schemas import ActionOut, errors

router = APIRouter(prefix="/api", tags=["actions"])


def action_list(db, *, limit: int, offset: int) -> list[ActionOut]:
    return [ActionOut(at=aware(a.at), actor=a.actor, role=a.role, action=a.action, target=a.target, outcome=a.outcome,
                      detail=a.detail) for a in auth.activity(db, limit=limit, offset=offset)]


@router.get("/actions", response_model=list[ActionOut], responses=errors(401, 422))
def actions(
    staff: CurrentStaff, db: Db,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[ActionOut]:
    return action_list(db, limit=limit, offset=offset)
