"""What the portal reads from the chain and the node for a patient: studies, consent, history, rounds."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from eth_account import Account
from eth_account.messages import encode_typed_data

from contracts.ledger import (
    Ledger, LedgerError, SignedGrant, SignedRevoke, StudyTerms, sign_grant, sign_revoke,
)
from contracts.ledger.signing import CONSENT_DOMAIN_TYPES, GRANT_TYPES, REVOKE_TYPES, consent_domain
from federation.commitment import combined_commitment
from federation.tasks import TASKS
from node.portal.accounts import PortalError
from node.store import RoundUsage, Store
from federation.ids import from_hex0x, hex0x

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
MAX_VALID_UNTIL = 2**32 - 1


def purpose_text(code: str) -> str:
    return PURPOSES.get(code, f"purpose code {code}")


def task_text(task_id: str) -> str:
    """What a study of the task learns, as the task declares it (federation/tasks/*/ `description`)."""
    task = TASKS.get(task_id)
    return task.description if task and task.description else f"the federated task {task_id}"


def data_text(task_id: str) -> str:
    """Which of the patient's data the task reads, as the task declares it (`data_read`)."""
    task = TASKS.get(task_id)
    return task.data_read if task and task.data_read else "the fields its task declares (ask the hospital)"


def study_hospitals(ledger: Ledger, study_id: bytes) -> list[str]:
    """Accounts of the hospitals that accepted the study, in the order they did (StudyAccepted events)."""
    try:
        logs = ledger.consortium.events.StudyAccepted.get_logs(
            from_block=ledger.deployment.deployed_block, argument_filters={"studyId": study_id})
    except Exception as exc:  # noqa: BLE001 - any failure to read events means the same here
        raise LedgerError(f"the study's hospitals could not be read: {type(exc).__name__}") from exc
    seen: list[str] = []
    for log in sorted(logs, key=lambda entry: (entry["blockNumber"], entry["logIndex"])):
        if log["args"]["hospital"] not in seen:
            seen.append(log["args"]["hospital"])
    return seen


def study_hex(study_id: bytes) -> str:
    return hex0x(study_id)


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
    # Both at one block: a relayed change landing between two "latest" reads would pair a grant with no window.
    block = ledger.block_number()
    valid_from, valid_until = ledger.consent_window(pseudonym, study_id, block=block)
    return ConsentState(ledger.has_consent(pseudonym, study_id, block=block), valid_from, valid_until)


def consent_at(valid_from: int, valid_until: int, *, timestamp: int) -> ConsentState:
    """The consent of a window read at a block whose clock is `timestamp`: granted as ConsentRegistry.hasConsent
    decides it (what a "sent" answer shows: the change is not on chain yet)."""
    return ConsentState(valid_from <= timestamp < valid_until, valid_from, valid_until)


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
            model_hash=hex0x(anchor.model_hash) if anchor else None,
        ))
    return result


# ---- signing: by the portal with the password-sealed key, or by the patient's wallet ----

_TYPES = {**GRANT_TYPES, **REVOKE_TYPES}  # the ledger client signs with the same types


def typed_data(ledger: Ledger, primary: str, message: dict) -> dict:
    """The EIP-712 typed data of a Grant or Revoke, as eth_signTypedData_v4 takes it (bytes as 0x-hex)."""
    deployment = ledger.deployment
    return {
        "types": {"EIP712Domain": CONSENT_DOMAIN_TYPES, primary: _TYPES[primary]},
        "primaryType": primary,
        "domain": consent_domain(deployment),
        "message": {k: hex0x(v) if isinstance(v, bytes) else v for k, v in message.items()},
    }


def _deadline(ledger: Ledger, deadline_s: int) -> tuple[int, int]:
    chain_now = ledger.block_timestamp()
    return chain_now, max(int(time.time()), chain_now) + deadline_s


def grant_message(ledger: Ledger, pseudonym: bytes, study: StudyTerms, *, valid_until: int | None,
                  deadline_s: int) -> dict:
    """What the patient signs to agree: from now (the chain's clock) until `valid_until` (default: the study's end)."""
    chain_now, deadline = _deadline(ledger, deadline_s)
    until = study.ends_at if valid_until is None else valid_until
    if until <= chain_now:
        raise PortalError("the consent must end in the future", status=422)
    if until > MAX_VALID_UNTIL:
        raise PortalError("the consent cannot end after 7 February 2106", status=422)
    if study.suspended or study.ends_at <= chain_now:
        raise PortalError("this study is suspended or has ended: it takes no new consent", status=409)
    return {"pseudonym": pseudonym, "studyId": study.study_id, "validFrom": chain_now, "validUntil": until,
            "nonce": ledger.patient_nonce(pseudonym), "deadline": deadline}


def revoke_message(ledger: Ledger, pseudonym: bytes, study_id: bytes, *, deadline_s: int) -> dict:
    _, deadline = _deadline(ledger, deadline_s)
    return {"pseudonym": pseudonym, "studyId": study_id, "nonce": ledger.patient_nonce(pseudonym), "deadline": deadline}


def sign_with_key(ledger: Ledger, key: bytes, message: dict) -> SignedGrant | SignedRevoke:
    """The portal signs for a patient who typed their password (the key lives only in this request)."""
    fields = dict(pseudonym=message["pseudonym"], study_id=message["studyId"], nonce=message["nonce"],
                  deadline=message["deadline"])
    if "validUntil" in message:
        return sign_grant(key, ledger.deployment, valid_from=message["validFrom"], valid_until=message["validUntil"],
                          **fields)
    return sign_revoke(key, ledger.deployment, **fields)


def from_wallet(ledger: Ledger, consent_address: str, message: dict, signature: str, *,
                deadline_s: int) -> SignedGrant | SignedRevoke:
    """A change the patient's wallet signed, checked before the hospital relays it: the signer must be the
    patient's consent key, the nonce the current one, the deadline near."""
    primary = "Grant" if "validUntil" in message else "Revoke"
    raw = from_hex0x(signature)
    try:
        signer = Account.recover_message(encode_typed_data(full_message=typed_data(ledger, primary, message)),
                                         signature=raw)
    except Exception:  # noqa: BLE001 - a malformed signature (bad v, s out of range) is the patient's input
        raise PortalError("the signature is malformed: sign again with your wallet", status=422) from None
    if signer != consent_address:
        raise PortalError(f"the signature is not from your consent key {consent_address} (it is from {signer}): "
                          "sign with the wallet account you gave at enrolment", status=403)
    current = ledger.patient_nonce(message["pseudonym"])
    if message["nonce"] != current:
        raise PortalError(f"the signature is for an earlier state of your consent (nonce {message['nonce']}, now "
                          f"{current}): reload the page and sign again", status=409)
    chain_now, latest = _deadline(ledger, deadline_s)
    if not chain_now < message["deadline"] <= latest + 300:
        raise PortalError("the signature's deadline has passed or is too far ahead: reload the page and sign again",
                          status=409)
    if primary == "Grant":
        if not (message["validFrom"] <= chain_now + 300 and chain_now < message["validUntil"] <= MAX_VALID_UNTIL):
            raise PortalError("the consent window is not valid: it must start now and end in the future", status=422)
        return SignedGrant(message["pseudonym"], message["studyId"], message["validFrom"], message["validUntil"],
                           message["nonce"], message["deadline"], raw)
    return SignedRevoke(message["pseudonym"], message["studyId"], message["nonce"], message["deadline"], raw)


# ---- checking a round against the chain ----

@dataclass(frozen=True)
class RoundProof:
    use: RoundUse
    hospital_account: str
    commitment_on_chain: str | None
    commitment_from_log: str


def round_proof(ledger: Ledger, store: Store, pseudonym: str, study_id: bytes, round_number: int) -> RoundProof:
    """A round that used the patient: its anchor, and this hospital's commitment recomputed from the usage log."""
    use = next((u for u in rounds_using(ledger, store, pseudonym, study_id) if u.round == round_number), None)
    if use is None:
        raise PortalError(f"round {round_number} of this study did not use your data", status=404)
    phases = {u.phase: u.phase_commitment() for u in store.usage(study_hex(study_id)) if u.round == round_number}
    recomputed = combined_commitment(phases.get("train", b""), phases.get("evaluate", b""))  # node/erase.py aside
    anchor = next((a for a in ledger.round_anchors(study_id) if a.round == round_number), None)
    on_chain = anchor.commitments.get(ledger.address) if anchor else None
    return RoundProof(use, ledger.address, hex0x(on_chain) if on_chain else None, hex0x(recomputed))
