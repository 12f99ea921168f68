"""The patient's studies: terms in plain language, their consent, grant, revoke (signed by the portal with the
password-sealed key, or by the patient's own wallet), rounds and how to check them, FHIR export."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from contracts.fhir_consent import export_consent
from contracts.ledger import SignedGrant, SignedRevoke
from federation import ids
from node.portal import studies, views
from node.portal.accounts import PortalError
from node.portal.deps import Me, PatientRequest, PortalState, State, client_ip
from node.portal.desk import ChangeAsk
from node.portal.models import ConsentRelay
from node.portal.schemas import (
    ERRORS, STUDY_ID_PATTERN, ConsentChangeOut, ConsentChangeResult, GrantRequest, RevokeRequest, RoundOut,
    RoundProofOut, SignedGrantRequest, SignedRevokeRequest, StudyDetailOut, StudyOut, TypedDataOut,
)

router = APIRouter(prefix="/api/studies", tags=["studies"], responses=ERRORS)

StudyId = Annotated[str, Path(pattern=STUDY_ID_PATTERN, description="0x and 64 hex digits")]
RoundNumber = Annotated[int, Path(ge=1, le=2**32 - 1, description="the round's number, from 1")]
CHANGE_RESPONSES = {202: {"model": ConsentChangeResult, "description": "sent, not recorded yet: follow change_id"}}


def _sid(study_id: str) -> bytes:
    return ids.StudyId.parse(study_id)


def _wallet_only(me: PatientRequest) -> None:
    if me.account.key_custody != "wallet":
        raise PortalError("the portal holds your consent key under your password: send your password to "
                          "POST /api/studies/{id}/grant or /revoke instead", status=409)


# ---- one change, from the desk to its answer (shared with the pages and the withdrawal door) ----

def change_ask(request: Request, state: PortalState, study_id: str, action: str, *, password: str,
               valid_until: int | None, form_csrf: str | None = None) -> ChangeAsk:
    """What the change desk needs of a request: its session cookie, its CSRF token (the header, or a page's
    form field `form_csrf`), the client, and the change."""
    page = form_csrf is not None
    return ChangeAsk(cookie=request.cookies.get(state.settings.cookie_name), client=client_ip(request),
                     csrf=form_csrf if page else request.headers.get("x-csrf-token"), page=page,
                     study_id=study_id, action=action, password=password, valid_until=valid_until)


async def wait_for_ledger(state: PortalState, row, *, timeout_s: float) -> None:
    """Wait up to `timeout_s` for the worker to record (or fail) the change, holding no thread, no database
    connection and no chain call."""
    finished = state.relayer.finished(row.id)
    if finished is None or timeout_s <= 0:
        return
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(finished)), timeout=timeout_s)
    except TimeoutError:
        pass


def _result(state: PortalState, study_id: str, change_id: int, response: Response) -> ConsentChangeResult:
    """200 once recorded, 202 while still on its way ("sent"), the reason if refused."""
    with state.store.session() as db:
        row = db.get(ConsentRelay, change_id)
    if row.status == "failed":
        raise PortalError(row.reason or "the change was not recorded", status=row.failure_status or 409)
    if row.status == "sent":
        response.status_code = 202
    consent = studies.consent_state(state.chain, ids.Pseudonym.parse(row.pseudonym), _sid(study_id))
    return _change_result(study_id, row, status=row.status, block=row.block, consent=consent)


def _change_result(study_id: str, row, *, status: str, block: int | None, consent: studies.ConsentState
                   ) -> ConsentChangeResult:
    return ConsentChangeResult(study_id=study_id.lower(), granted=row.action == "grant", change_id=row.id,
                               status=status, block=block, consent=views.consent_out(consent))


async def answer(state: PortalState, study_id: str, row, response: Response, *,
                 consent_before: studies.ConsentState | None = None) -> ConsentChangeResult:
    """The change's answer. When the portal waits for no receipt (relay-wait-s 0) and the desk read the consent
    before the change (`consent_before`), "sent" at once; otherwise what the change became within relay-wait-s."""
    if consent_before is not None and state.settings.relay_wait_s <= 0:
        response.status_code = 202
        return _change_result(study_id, row, status="sent", block=None, consent=consent_before)
    await wait_for_ledger(state, row, timeout_s=state.settings.relay_wait_s)
    return await run_in_threadpool(_result, state, study_id, row.id, response)


# ---- reading ----

@router.get("", response_model=list[StudyOut])
def list_studies(me: Me) -> list[StudyOut]:
    return views.all_studies(me.ledger, me.settings, me.pseudonym)


@router.get("/{study_id}", response_model=StudyDetailOut)
def get_study(study_id: StudyId, me: Me) -> StudyDetailOut:
    sid = _sid(study_id)
    terms = studies.require_study(me.ledger, sid)
    history = [ConsentChangeOut(granted=g, block=b) for g, b in studies.consent_history(me.ledger, me.pseudonym, sid)]
    return StudyDetailOut(**views.study_out(me.ledger, me.settings, terms, me.pseudonym), history=history)


# ---- changing the consent with the password-sealed key ----

@router.post("/{study_id}/grant", response_model=ConsentChangeResult, responses=CHANGE_RESPONSES)
async def grant(study_id: StudyId, body: GrantRequest, request: Request, response: Response, state: State
                ) -> ConsentChangeResult:
    until = views.seconds_of(body.valid_until) if body.valid_until is not None else None
    queued = await state.desk.change(change_ask(request, state, study_id, "grant", password=body.password,
                                                valid_until=until))
    return await answer(state, study_id, queued.row, response, consent_before=queued.consent_before)


@router.post("/{study_id}/revoke", response_model=ConsentChangeResult, responses=CHANGE_RESPONSES)
async def revoke(study_id: StudyId, body: RevokeRequest, request: Request, response: Response, state: State
                 ) -> ConsentChangeResult:
    queued = await state.desk.change(change_ask(request, state, study_id, "revoke", password=body.password,
                                                valid_until=None))
    return await answer(state, study_id, queued.row, response, consent_before=queued.consent_before)


# ---- changing the consent with the patient's wallet ----

@router.get("/{study_id}/grant/typed-data", response_model=TypedDataOut)
def grant_typed_data(study_id: StudyId, me: Me,
                     valid_until: Annotated[datetime | None, Query(description="default: the study's end")] = None
                     ) -> TypedDataOut:
    """What the wallet signs to agree (EIP-712, for eth_signTypedData_v4); nothing is stored."""
    _wallet_only(me)
    terms = studies.require_study(me.ledger, _sid(study_id))
    until = views.seconds_of(valid_until) if valid_until is not None else None
    message = studies.grant_message(me.ledger, me.pseudonym, terms, valid_until=until,
                                    deadline_s=me.settings.signature_deadline_s)
    return TypedDataOut(**studies.typed_data(me.ledger, "Grant", message))


@router.get("/{study_id}/revoke/typed-data", response_model=TypedDataOut)
def revoke_typed_data(study_id: StudyId, me: Me) -> TypedDataOut:
    """What the wallet signs to withdraw (EIP-712, for eth_signTypedData_v4); nothing is stored."""
    _wallet_only(me)
    sid = _sid(study_id)
    studies.require_study(me.ledger, sid)
    message = studies.revoke_message(me.ledger, me.pseudonym, sid, deadline_s=me.settings.signature_deadline_s)
    return TypedDataOut(**studies.typed_data(me.ledger, "Revoke", message))


def _relay_signed(me: PatientRequest, study_id: str, message: dict, signature: str):
    _wallet_only(me)
    studies.require_study(me.ledger, _sid(study_id))
    signed: SignedGrant | SignedRevoke = studies.from_wallet(me.ledger, me.account.consent_address, message, signature,
                                                            deadline_s=me.settings.signature_deadline_s)
    return me.state.relayer.submit(me.db, me.account, study_id, signed)


@router.post("/{study_id}/grant/signed", response_model=ConsentChangeResult, responses=CHANGE_RESPONSES)
async def grant_signed(study_id: StudyId, body: SignedGrantRequest, response: Response, me: Me) -> ConsentChangeResult:
    """Relay a grant the patient's wallet signed; the signer must be the patient's consent key."""
    message = {"pseudonym": me.pseudonym, "studyId": _sid(study_id), "validFrom": body.valid_from,
               "validUntil": body.valid_until, "nonce": body.nonce, "deadline": body.deadline}
    row = await run_in_threadpool(_relay_signed, me, study_id, message, body.signature)
    return await answer(me.state, study_id, row, response)


@router.post("/{study_id}/revoke/signed", response_model=ConsentChangeResult, responses=CHANGE_RESPONSES)
async def revoke_signed(study_id: StudyId, body: SignedRevokeRequest, response: Response, me: Me
                        ) -> ConsentChangeResult:
    """Relay a revocation the patient's wallet signed; the signer must be the patient's consent key."""
    message = {"pseudonym": me.pseudonym, "studyId": _sid(study_id), "nonce": body.nonce, "deadline": body.deadline}
    row = await run_in_threadpool(_relay_signed, me, study_id, message, body.signature)
    return await answer(me.state, study_id, row, response)


# ---- rounds and export ----

@router.get("/{study_id}/rounds", response_model=list[RoundOut])
def rounds(study_id: StudyId, me: Me) -> list[RoundOut]:
    sid = _sid(study_id)
    studies.require_study(me.ledger, sid)
    return [RoundOut(**use.__dict__) for use in studies.rounds_using(me.ledger, me.state.store, me.account.pseudonym, sid)]


@router.get("/{study_id}/rounds/{round_number}", response_model=RoundProofOut)
def round_proof(study_id: StudyId, round_number: RoundNumber, me: Me) -> RoundProofOut:
    """A round that used the patient's data, with its anchor and this hospital's commitment recomputed from the
    usage log, so that anyone can check it against the chain."""
    sid = _sid(study_id)
    studies.require_study(me.ledger, sid)
    proof = studies.round_proof(me.ledger, me.state.store, me.account.pseudonym, sid, round_number)
    return views.round_proof_out(me.ledger, me.settings, proof, study_id)


@router.get("/{study_id}/consent.fhir.json", response_class=JSONResponse,
            responses={200: {"content": {"application/fhir+json": {"schema": {"type": "object"}}},
                             "description": "a FHIR R4 Consent resource"}})
def fhir_consent(study_id: StudyId, me: Me) -> JSONResponse:
    sid = _sid(study_id)
    studies.require_study(me.ledger, sid)
    resource = export_consent(me.ledger, me.pseudonym, sid)
    return JSONResponse(resource, media_type="application/fhir+json", headers={
        "Content-Disposition": f'attachment; filename="consent-{study_id[2:14].lower()}.fhir.json"'})
