"""The response models the JSON API and the pages share, built from the chain and the node's records."""

from __future__ import annotations

from datetime import datetime, timezone

from contracts.ledger import Ledger, LedgerError, StudyTerms
from node.portal import studies
from node.portal.accounts import PortalError
from node.portal.models import ConsentRelay
from node.portal.schemas import ChangeOut, ConsentOut, HospitalOut, RoundProofOut, StudyOut
from node.portal.settings import PortalSettings
from federation.ids import StudyId


def time_of(seconds: int) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=timezone.utc) if seconds else None


def seconds_of(moment: datetime) -> int:
    """Unix seconds of a date the patient gave (UTC if it names no zone); absurd dates are a 422."""
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    try:
        return int(moment.timestamp())
    except (OverflowError, ValueError, OSError):
        raise PortalError("the end date is out of range", status=422) from None


def consent_out(state: studies.ConsentState) -> ConsentOut:
    return ConsentOut(granted=state.granted, valid_from=time_of(state.valid_from), valid_until=time_of(state.valid_until))


def study_out(ledger: Ledger, settings: PortalSettings, terms: StudyTerms, pseudonym: bytes) -> dict:
    hospitals = [HospitalOut(account=a, this_hospital=a == ledger.address,
                             name=settings.node.hospital if a == ledger.address else settings.hospital_names.get(a.lower()))
                 for a in studies.study_hospitals(ledger, terms.study_id)]
    return dict(
        study_id=studies.study_hex(terms.study_id), purpose_code=terms.purpose, purpose=studies.purpose_text(terms.purpose),
        task_id=terms.task_id, task=studies.task_text(terms.task_id), data_used=studies.data_text(terms.task_id),
        hospitals=hospitals, epsilon_budget=terms.epsilon_budget, delta=terms.delta, rounds=terms.rounds,
        ends_at=time_of(terms.ends_at) or datetime.fromtimestamp(0, timezone.utc), suspended=terms.suspended,
        consent=consent_out(studies.consent_state(ledger, pseudonym, terms.study_id)),
    )


def all_studies(ledger: Ledger, settings: PortalSettings, pseudonym: bytes) -> list[StudyOut]:
    return [StudyOut(**study_out(ledger, settings, ledger.study(s), pseudonym)) for s in studies.accepted_studies(ledger)]


def explorer_url(settings: PortalSettings, block: int | None) -> str | None:
    return settings.explorer_block_url.replace("{block}", str(block)) if settings.explorer_block_url and block else None


def change_out(ledger: Ledger, row: ConsentRelay, pseudonym: bytes) -> ChangeOut:
    latest = on_chain = None
    if row.status == "recorded":
        try:
            latest = ledger.block_number()
            # The chain itself, asked at the recording block, must show the choice.
            held = ledger.has_consent(pseudonym, StudyId.parse(row.study_id), block=row.block)
            on_chain = held if row.action == "grant" else not held
        except LedgerError:
            pass  # the row still says what the receipt said; the page asks again later
    return ChangeOut(
        change_id=row.id, study_id=row.study_id, action=row.action, status=row.status, block=row.block,
        tx_hash=row.tx_hash, reason=row.reason, latest_block=latest,
        confirmations=latest - row.block + 1 if latest is not None and row.block is not None else None,
        on_chain=on_chain, explanation=explain(row))


def explain(row: ConsentRelay) -> str:
    if row.status == "sent":
        waiting = f" Not yet: {row.waiting}." if row.waiting else ""
        return ("Sent: the portal keeps your signed change and passes it to the consent ledger, then waits for a "
                f"block to record it.{waiting} Until it is recorded, your earlier choice holds.")
    if row.status == "failed":
        return f"Not recorded: {row.reason}. Your earlier choice still holds."
    if row.action == "grant":
        return (f"Your consent is recorded on the ledger at block {row.block}. Training rounds that start from now "
                "on may use your data, within the study's terms, until your consent ends or you withdraw it.")
    return (f"Your withdrawal is recorded on the ledger at block {row.block}. From the next training round on, your data is "
            "not used: every round checks consent at a block it fixes when it starts, and from this block on the "
            "ledger shows your withdrawal. A round already under way before this block may still finish with your "
            "data; rounds that already ran are not undone.")


def round_proof_out(ledger: Ledger, settings: PortalSettings, proof: studies.RoundProof, study_id: str) -> RoundProofOut:
    use = proof.use
    return RoundProofOut(
        **use.__dict__, study_id=study_id.lower(), chain_id=ledger.deployment.chain_id,
        consortium=ledger.deployment.consortium, hospital_account=proof.hospital_account,
        commitment_on_chain=proof.commitment_on_chain, commitment_from_log=proof.commitment_from_log,
        matches=proof.commitment_on_chain == proof.commitment_from_log,
        explorer_url=explorer_url(settings, use.anchored_block))
