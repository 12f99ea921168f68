"""Enrolment codes for the patient portal: issue one for a record number; list those outstanding."""

from __future__ import annotations

from fastapi import APIRouter

from node.console import records
from node.console.deps import CurrentStaff, Db, ItAdmin, State, record
from node.console.schemas import EnrolmentCodeOut, EnrolmentCodeRequest, OutstandingCode, errors
from node.portal import accounts
from node.portal.settings import PortalSettings

router = APIRouter(prefix="/api", tags=["enrolment"])


def issue(db, state, staff, record_number: str) -> EnrolmentCodeOut:
    try:
        portal = PortalSettings.load(state.settings.node.home)  # the portal's code lifetime (portal.toml)
        issued = accounts.create_enrolment_code(db, portal, record_number)
    except accounts.PortalError as exc:  # a WebError: it answers as it is
        record(db, staff, "enrolment-code.issue", target=record_number, outcome="refused", detail=str(exc))
        raise
    record(db, staff, "enrolment-code.issue", target=record_number)
    return EnrolmentCodeOut(code=issued.code, record_number=issued.record_number, expires_at=issued.expires_at)


@router.post("/enrolment-codes", response_model=EnrolmentCodeOut, status_code=201, responses=errors(401, 403, 404, 409, 422))
def create_code(body: EnrolmentCodeRequest, staff: ItAdmin, db: Db, state: State) -> EnrolmentCodeOut:
    return issue(db, state, staff, body.record_number)


@router.get("/enrolment-codes", response_model=list[OutstandingCode], responses=errors(401))
def outstanding(staff: CurrentStaff, db: Db) -> list[OutstandingCode]:
    return records.outstanding_codes(db)
