"""GET /api/activity: the action log, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from coordinator.console.deps import ApiCaller, Db
from coordinator.console.schemas import COMMON, ActivityOut, answers
from federation.web import auth

router = APIRouter(prefix="/api/activity", tags=["activity"], responses=answers(*COMMON))


@router.get("", response_model=list[ActivityOut])
def activity(caller: ApiCaller, db: Db, limit: Annotated[int, Query(ge=1, le=1000)] = 200,
             offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> list[ActivityOut]:
    return [ActivityOut.model_validate(entry, from_attributes=True) for entry in auth.activity(db, limit=limit, offset=offset)]
