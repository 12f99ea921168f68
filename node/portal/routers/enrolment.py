"""The patient redeems an enrolment code: account, password, consent key, enrolment on chain."""

from __future__ import annotations

from fastapi import APIRouter

from node.portal import accounts
from node.portal.deps import Db, Settings, State
from node.portal.schemas import ERRORS, AccountOut, RedeemRequest

router = APIRouter(prefix="/api", tags=["enrolment"], responses=ERRORS)


@router.post("/enrolment", response_model=AccountOut, status_code=201)
def redeem(body: RedeemRequest, db: Db, settings: Settings, state: State) -> AccountOut:
    with state.chain_lock:
        account = accounts.redeem_enrolment_code(db, settings, lambda: state.ledger, code=body.code, username=body.username,
                                                 password=body.password, wallet_address=body.wallet_address)
    return AccountOut(username=account.username, pseudonym=account.pseudonym, consent_address=account.consent_address,
                      key_custody=account.key_custody, hospital=settings.node.hospital)
