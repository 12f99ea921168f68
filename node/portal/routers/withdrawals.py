"""The withdrawal door (node.portal.withdrawals): withdraw with user name and password, without logging in."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from node.portal import accounts, withdrawals
from node.portal.deps import Db, State, client_ip
from node.portal.routers.studies import CHANGE_RESPONSES, answer
from node.portal.schemas import (
    ERRORS, ConsentChangeResult, SignedWithdrawalRequest, TypedDataOut, WithdrawalRequest,
)

router = APIRouter(prefix="/api", tags=["studies"], responses=ERRORS)


def checked_at_the_door(request: Request, db, state, *, username: str, password: str):
    return withdrawals.authenticate(db, state.settings, username=username, password=password,
                                    client_ip=client_ip(request),
                                    device_cookie=request.cookies.get(accounts.DEVICE_COOKIE))


def door(request: Request, db, state, *, username: str, password: str, study_id: str):
    """Check the password at the door and put the signed withdrawal in the outbox; the outbox row."""
    account = checked_at_the_door(request, db, state, username=username, password=password)
    return withdrawals.withdraw(db, state, account, password=password, study_id=study_id)


def wallet_door(request: Request, db, state, *, username: str, password: str, study_id: str) -> dict:
    """Check the password at the door and give a wallet patient the revocation to sign."""
    account = checked_at_the_door(request, db, state, username=username, password=password)
    return withdrawals.revoke_typed_data(state, account, study_id=study_id)


@router.post("/withdrawals", response_model=ConsentChangeResult, responses=CHANGE_RESPONSES)
async def withdraw(body: WithdrawalRequest, request: Request, response: Response, db: Db, state: State
                   ) -> ConsentChangeResult:
    """Withdraw from a study with your user name and password, without logging in: the login's lockout (which
    anyone can trigger by typing wrong passwords for your user name) does not apply here; each client gets only
    a few wrong passwords."""
    row = await run_in_threadpool(door, request, db, state, username=body.username, password=body.password,
                                  study_id=body.study_id)
    return await answer(state, body.study_id, row, response)


@router.post("/withdrawals/typed-data", response_model=TypedDataOut)
async def withdrawal_typed_data(body: WithdrawalRequest, request: Request, db: Db, state: State) -> TypedDataOut:
    """For a patient whose wallet holds the consent key: what the wallet signs to withdraw (EIP-712, for
    eth_signTypedData_v4), given the password at the door (limited as `POST /api/withdrawals` is)."""
    typed = await run_in_threadpool(wallet_door, request, db, state, username=body.username, password=body.password,
                                    study_id=body.study_id)
    return TypedDataOut(**typed)


@router.post("/withdrawals/signed", response_model=ConsentChangeResult, responses=CHANGE_RESPONSES)
async def withdraw_signed(body: SignedWithdrawalRequest, request: Request, response: Response, db: Db, state: State
                          ) -> ConsentChangeResult:
    """Relay a withdrawal the patient's wallet signed, without logging in: the signature must be by the consent
    key of the account named."""
    account, row = await run_in_threadpool(
        withdrawals.relay_signed, db, state, username=body.username, study_id=body.study_id, nonce=body.nonce,
        deadline=body.deadline, signature=body.signature)
    return await answer(state, body.study_id, row, response)
