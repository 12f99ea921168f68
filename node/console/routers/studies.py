"""Accepted studies and the node's privacy budget per study."""

from __future__ import annotations

from fastapi import APIRouter

from node.console import budget
from node.console.deps import CurrentStaff, State
from node.console.schemas import StudiesOut, errors

router = APIRouter(prefix="/api", tags=["studies"])


@router.get("/studies", response_model=StudiesOut, responses=errors(401))
def studies(staff: CurrentStaff, state: State) -> StudiesOut:
    return budget.studies(state)
