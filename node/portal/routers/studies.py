"""The patient's studies: terms in plain language, their consent, grant, revoke, rounds, FHIR export."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from contracts.fhir_consent import export_consent
from contracts.ledger import Ledger, StudyTerms
from node.portal import accounts, studies
from node.portal.deps import Chain, CurrentPatient, Db, Settings, State, client_ip
from node.portal.schemas import (
    STUDY_ID_PATTERN, ConsentChangeOut, ConsentChangeResult, ConsentOut, GrantRequest, RevokeRequest, RoundOut,
    StudyDetailOut, StudyOut,
)

router = APIRouter(prefix="/api/studies", tags=["studies"])

StudyId = Annotated[str, Path(pattern=STUDY_ID_PATTERN, description="0x and 64 hex digits")]


def _time(seconds: int) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=timezone.utc) if seconds else None


def _consent(state: studies.ConsentState) -> ConsentOut:
    return ConsentOut(granted=state.granted, valid_from=_time(state.valid_from), valid_until=_time(state.valid_until))


def _pseudonym(patient) -> bytes:
    return bytes.fromhex(patient.account.pseudonym[2:])


def _study_out(ledger: Ledger, terms: StudyTerms, pseudonym: bytes) -> dict:
    return dict(
        study_id=studies.study_hex(terms.study_id), purpose_code=terms.purpose, purpose=studies.purpose_text(terms.purpose),
        task_id=terms.task_id, task=studies.task_text(terms.task_id), epsilon_budget=terms.epsilon_budget,
        delta=terms.delta, rounds=terms.rounds, ends_at=_time(terms.ends_at) or datetime.fromtimestamp(0, timezone.utc),
        suspended=terms.suspended, consent=_consent(studies.consent_state(ledger, pseudonym, terms.study_id)),
    )


@router.get("", response_model=list[StudyOut])
def list_studies(patient: CurrentPatient, ledger: Chain) -> list[StudyOut]:
    pseudonym = _pseudonym(patient)
    return [StudyOut(**_study_out(ledger, ledger.study(s), pseudonym)) for s in studies.accepted_studies(ledger)]


@router.get("/{study_id}", response_model=StudyDetailOut)
def get_study(study_id: StudyId, patient: CurrentPatient, ledger: Chain) -> StudyDetailOut:
    sid = bytes.fromhex(study_id[2:])
    terms = studies.require_study(ledger, sid)
    pseudonym = _pseudonym(patient)
    history = [ConsentChangeOut(granted=g, block=b) for g, b in studies.consent_history(ledger, pseudonym, sid)]
    return StudyDetailOut(**_study_out(ledger, terms, pseudonym), history=history)


@router.post("/{study_id}/grant", response_model=ConsentChangeResult)
def grant(study_id: StudyId, body: GrantRequest, request: Request, patient: CurrentPatient, db: Db,
          settings: Settings, ledger: Chain, state: State) -> ConsentChangeResult:
    sid = bytes.fromhex(study_id[2:])
    terms = studies.require_study(ledger, sid)
    until = None
    if body.valid_until is not None:
        moment = body.valid_until if body.valid_until.tzinfo else body.valid_until.replace(tzinfo=timezone.utc)
        until = int(moment.timestamp())
    key = accounts.unlock_key(db, settings, patient.account, body.password, client_ip=client_ip(request))
    with state.chain_lock:
        block, _, _ = studies.grant(ledger, key, _pseudonym(patient), terms, valid_until=until,
                                    deadline_s=settings.signature_deadline_s)
    del key
    return ConsentChangeResult(study_id=study_id.lower(), granted=True, block=block,
                               consent=_consent(studies.consent_state(ledger, _pseudonym(patient), sid)))


@router.post("/{study_id}/revoke", response_model=ConsentChangeResult)
def revoke(study_id: StudyId, body: RevokeRequest, request: Request, patient: CurrentPatient, db: Db,
           settings: Settings, ledger: Chain, state: State) -> ConsentChangeResult:
    sid = bytes.fromhex(study_id[2:])
    studies.require_study(ledger, sid)
    key = accounts.unlock_key(db, settings, patient.account, body.password, client_ip=client_ip(request))
    with state.chain_lock:
        block = studies.revoke(ledger, key, _pseudonym(patient), sid, deadline_s=settings.signature_deadline_s)
    del key
    return ConsentChangeResult(study_id=study_id.lower(), granted=False, block=block,
                               consent=_consent(studies.consent_state(ledger, _pseudonym(patient), sid)))


@router.get("/{study_id}/rounds", response_model=list[RoundOut])
def rounds(study_id: StudyId, patient: CurrentPatient, ledger: Chain, state: State) -> list[RoundOut]:
    sid = bytes.fromhex(study_id[2:])
    studies.require_study(ledger, sid)
    return [RoundOut(**use.__dict__) for use in studies.rounds_using(ledger, state.store, patient.account.pseudonym, sid)]


@router.get("/{study_id}/consent.fhir.json", response_class=JSONResponse,
            responses={200: {"content": {"application/fhir+json": {}}, "description": "a FHIR R4 Consent resource"}})
def fhir_consent(study_id: StudyId, patient: CurrentPatient, ledger: Chain) -> JSONResponse:
    sid = bytes.fromhex(study_id[2:])
    studies.require_study(ledger, sid)
    resource = export_consent(ledger, _pseudonym(patient), sid)
    return JSONResponse(resource, media_type="application/fhir+json", headers={
        "Content-Disposition": f'attachment; filename="consent-{study_id[2:14].lower()}.fhir.json"'})
