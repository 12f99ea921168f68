"""The node's health."""

from __future__ import annotations

from fastapi import APIRouter

from node.console.deps import CurrentStaff, State
from node.console.health import node_health
from node.console.schemas import HealthOut, errors

router = APIRouter(prefix="/api", tags=["health"])


@router.get("/health", response_model=HealthOut, responses=errors(401))
def health(staff: CurrentStaff, state: State) -> HealthOut:
    return node_health(state)
