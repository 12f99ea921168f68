"""GET/POST /api/studies, GET /api/studies/{study_id}: studies on chain and who accepted them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from coordinator.console import service
from coordinator.console.deps import ApiCaller, ApiOperator, Db, State
from coordinator.console.schemas import COMMON, STUDY_ID_PATTERN, StudyCreate, answers, StudyCreated, StudyOut

router = APIRouter(prefix="/api/studies", tags=["studies"], responses=answers(*COMMON))


@router.get("", response_model=list[StudyOut])
def list_studies(caller: ApiCaller, state: State) -> list[StudyOut]:
    return service.list_studies(state)


@router.post("", response_model=StudyCreated, status_code=201)
def create_study(body: StudyCreate, caller: ApiOperator, db: Db, state: State) -> StudyCreated:
    return service.create_study(state, db, caller, body, client=caller.client)


@router.get("/{study_id}", response_model=StudyOut)
def get_study(study_id: Annotated[str, Path(pattern=STUDY_ID_PATTERN)], caller: ApiCaller, state: State) -> StudyOut:
    return service.get_study(state, study_id)
