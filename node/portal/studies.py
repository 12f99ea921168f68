"""What the portal reads from the chain and the node for a patient: studies, consent, history, rounds."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from contracts.ledger import Ledger, StudyTerms, sign_grant, sign_revoke
from node.portal.accounts import PortalError
from node.store import RoundUsage, Store

# HL7 v3 PurposeOfUse (v3-ActReason) codes in plain language.
PURPOSES = {
    "HRESCH": "health research",
    "BIORCH": "biomedical research",
    "CLINTRCH": "clinical trial research",
    "CLINTRCHNPC": "clinical trial research without patient care",
    "PATRQT": "at your own request",
    "TREAT": "your treatment",
    "HOPERAT": "running the hospital's services",
    "PUBHLTH": "public health",
    "HQUALIMP": "improving the quality of care",
    "HSYSADMIN": "maintaining the hospital's systems",
    "HMARKT": "marketing",
    "HPAYMT": "payment for care",
    "ETREAT": "emergency treatment",
    "POPHLTH": "population health",
    "HTEST": "testing health information systems",
    "MLTRAINING": "training machine-learning models",
}
TASKS = {
    "heart-disease/v1": "predicting coronary artery disease from heart examination results "
                        "(age, sex, chest pain, blood pressure, cholesterol, blood sugar, ECG, heart rate, exercise test)",
}
MAX_VALID_UNTIL = 2**32 - 1


def purpose_text(code: str) -> str:
    return PURPOSES.get(code, f"purpose code {code}")


def task_text(task_id: str) -> str:
    return TASKS.get(task_id, task_id)


def study_hex(study_id: bytes) -> str:
    return "0x" + study_id.hex()


def accepted_studies(ledger: Ledger) -> list[bytes]:
    """The studies this hospital's account accepted, from the chain's StudyAccepted events, in order."""
    return ledger.accepted_studies(ledger.address)


def require_study(ledger: Ledger, study_id: bytes) -> StudyTerms:
    """The study's terms, if this hospital accepted it (404 otherwise: the portal shows no other study)."""
    if study_id not in accepted_studies(ledger):
        raise PortalError(f"no study {study_hex(study_id)} at this hospital", status=404)
    return ledger.study(study_id)


@dataclass(frozen=True)
class ConsentState:
    granted: bool
    valid_from: int
    valid_until: int


def consent_state(ledger: Ledger, pseudonym: bytes, study_id: bytes) -> ConsentState:
    valid_from, valid_until = ledger.consent_window(pseudonym, study_id)
    return ConsentState(ledger.has_consent(pseudonym, study_id), valid_from, valid_until)


def consent_history(ledger: Ledger, pseudonym: bytes, study_id: bytes) -> list[tuple[bool, int]]:
    return [(c.granted, c.block) for c in ledger.consent_changes(study_id) if c.pseudonym == pseudonym]


@dataclass(frozen=True)
class RoundUse:
    round: int
    phases: list[str]
    pinned_block: int
    anchored_block: int | None
    model_hash: str | None


def rounds_using(ledger: Ledger, store: Store, pseudonym: str, study_id: bytes) -> list[RoundUse]:
    """Rounds of a study whose usage (train or evaluate) included the patient, with their on-chain anchor."""
    used: dict[int, list[RoundUsage]] = {}
    for usage in store.usage(study_hex(study_id)):
        if pseudonym in json.loads(usage.pseudonyms):
            used.setdefault(usage.round, []).append(usage)
    if not used:
        return []
    anchors = {a.round: a for a in ledger.round_anchors(study_id) if ledger.address in a.commitments}
    result = []
    for number in sorted(used):
        anchor = anchors.get(number)
        result.append(RoundUse(
            round=number, phases=sorted({u.phase for u in used[number]}), pinned_block=used[number][0].block,
            anchored_block=anchor.anchored_block if anchor else None,
            model_hash="0x" + anchor.model_hash.hex() if anchor else None,
        ))
    return result


def grant(ledger: Ledger, key: bytes, pseudonym: bytes, study: StudyTerms, *, valid_until: int | None,
          deadline_s: int) -> tuple[int, int, int]:
    """Sign a grant with the patient's key and relay it; returns (block, valid_from, valid_until)."""
    chain_now = ledger.block_timestamp()
    until = study.ends_at if valid_until is None else valid_until
    if until <= chain_now:
        raise PortalError("the consent must end in the future", status=422)
    if until > MAX_VALID_UNTIL:
        raise PortalError("the consent cannot end after 7 February 2106", status=422)
    if study.suspended or study.ends_at <= chain_now:
        raise PortalError("this study is suspended or has ended: it takes no new consent", status=409)
    signed = sign_grant(key, ledger.deployment, pseudonym=pseudonym, study_id=study.study_id, valid_from=chain_now,
                        valid_until=until, nonce=ledger.patient_nonce(pseudonym),
                        deadline=max(int(time.time()), chain_now) + deadline_s)
    receipt = ledger.relay_grants([signed])[-1]
    return receipt["blockNumber"], chain_now, until


def revoke(ledger: Ledger, key: bytes, pseudonym: bytes, study_id: bytes, *, deadline_s: int) -> int:
    chain_now = ledger.block_timestamp()
    signed = sign_revoke(key, ledger.deployment, pseudonym=pseudonym, study_id=study_id,
                         nonce=ledger.patient_nonce(pseudonym), deadline=max(int(time.time()), chain_now) + deadline_s)
    return ledger.relay_revoke(signed)["blockNumber"]
