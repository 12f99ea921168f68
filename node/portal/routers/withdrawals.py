"""The withdrawal door (node.portal.withdrawals): withdraw with user name and password, without logging in."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from node.portal import accounts, withdrawals
from node.portal.deps import Caller, Db, PatientRequest, State, client_ip
from node.portal.routers.studies import CHANGE_RESPONSES, answer
from node.portal.schemas import ERRORS, ConsentChangeResult, WithdrawalRequest

router = APIRouter(prefix="/api", tags=["studies"], responses=ERRORS)


def door(request: Request, db, state, *, username: str, password: str, study_id: str):
    """Check the password at the door and put the signed withdrawal in the outbox; the patient's request and
    the outbox row."""
    ip = client_ip(request)
    account = withdrawals.authenticate(db, state.settings, username=username, password=password, client_ip=ip,
                                       device_cookie=request.cookies.get(accounts.DEVICE_COOKIE))
    me = PatientRequest(Caller(account, None, str(ip), account.username, "patient"), db, state)
    return me, withdrawals.withdraw(db, state, account, password=password, study_id=study_id)


@router.post("/withdrawals", response_model=ConsentChangeResult, responses=CHANGE_RESPONSES)
async def withdraw(body: WithdrawalRequest, request: Request, response: Response, db: Db, state: State
                   ) -> ConsentChangeResult:
    """Withdraw from a study with your user name and password, without logging in: the login's lockout (which
    anyone can trigger by typing wrong passwords for your user name) does not apply here; each client gets only
    a few wrong passwords."""
    me, row = await run_in_threadpool(door, request, db, state, username=body.username, password=body.password,
                                      study_id=body.study_id)
    return await answer(me, body.study_id, row, response)
