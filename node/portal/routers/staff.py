"""Hospital IT: enrolment codes (guarded by the staff token in keys/staff.token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from node.portal import accounts
from node.portal.deps import Db, Settings, require_staff
from node.portal.schemas import ERRORS, EnrolmentCodeOut, EnrolmentCodeRequest

router = APIRouter(prefix="/api/staff", tags=["staff"], dependencies=[Depends(require_staff)],
                   responses=ERRORS)


@router.post("/enrolment-codes", response_model=EnrolmentCodeOut, status_code=201)
def create_code(body: EnrolmentCodeRequest, db: Db, settings: Settings) -> EnrolmentCodeOut:
    issued = accounts.create_enrolment_code(db, settings, body.record_number)
    return EnrolmentCodeOut(code=issued.code, record_number=issued.record_number, expires_at=issued.expires_at)
