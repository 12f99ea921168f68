"""The consent gate: the one path by which a node reads patient data.

For a study, the round and the block a round pinned, it checks that the round is one of the study's
(1..rounds) and the block a real block, that this hospital accepted the study and that the study is live
at that block, asks the chain in batched view calls which candidate pseudonyms hold consent at that block,
and decrypts only those patients' records. A candidate counts only if this hospital enrolled it on chain
with the consent key the node stored when it did: a pseudonym another hospital enrolled first (a
front-run), or one never enrolled, is never read. Anything unclear fails closed: the gate raises a Refusal
that says why, and no record is decrypted.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import keccak
from sqlalchemy import bindparam, update

from contracts.ledger import ChainReset, ChainUnavailable, ContractRejected, Ledger, LedgerError
from federation import monitoring, protocol
from federation.ids import Pseudonym, StudyId
from node.store import Patient, Store
from node.vault import Vault, VaultError


# Distinct blocks the stored enrolment indexes were verified on that a read checks (one block hash each); past it
# the gate resolves every candidate again. Each round that meets patients new to it adds one.
MAX_VERIFICATIONS = 32


class Refusal(Exception):
    """The node uses no data for this request; `code` is a protocol error code, the message says why."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        monitoring.refused(code)  # every refusal is raised where it is made, so it is counted once


@dataclass(frozen=True)
class Admitted:
    """Patients whose consent held at the pinned block, with their decrypted clinical records."""

    study_id: bytes
    block: int
    pseudonyms: list[Pseudonym]
    records: list[dict]


class ConsentGate:
    def __init__(
        self, ledger: Ledger, store: Store, vault: Vault, *, hospital_account: str, max_pinned_block_age_s: float = 900.0
    ):
        self.ledger = ledger
        self.store = store
        self.vault = vault
        self.hospital_account = hospital_account
        self.max_pinned_block_age_s = max_pinned_block_age_s

    def check_study(self, study_id: bytes, block: int, *, round_number: int | None = None, block_hash: str = ""):
        """The study's terms at `block`, if this hospital may work on it then, in round `round_number`
        (1..the study's rounds), and `block_hash` (when given) is the hash of this chain's block `block`;
        otherwise a Refusal. A round outside the study would use patient data
        that the consortium can never anchor, so the audit would never see it."""
        if isinstance(block, bool) or not isinstance(block, int) or block < 0:
            raise Refusal(protocol.BAD_REQUEST, f"no data used: pinned block {block!r} is not a block number")
        if round_number is not None and (isinstance(round_number, bool) or not isinstance(round_number, int)):
            raise Refusal(protocol.BAD_REQUEST, f"no data used: round {round_number!r} is not a round number")
        try:
            latest = self.ledger.block_number()
            if block > latest:
                self.ledger.verify_chain()  # a chain behind the pinned block may be a reset one (ChainReset below)
                raise Refusal(protocol.BAD_REQUEST, f"pinned block {block} is ahead of the chain (at {latest})")
            if block_hash and self.ledger.block_hash(block) != block_hash:
                self.ledger.verify_chain()  # a reset chain is told as such (ChainReset below)
                raise Refusal(
                    protocol.PINNED_BLOCK_NOT_CANONICAL,
                    f"no data used: the round pinned block {block} with hash {block_hash[:14]}..., but this "
                    f"chain's block {block} is another (a reorganisation dropped the pinned block, or the "
                    "coordinator reads another chain)",
                )
            age_s = self.ledger.block_timestamp(latest) - self.ledger.block_timestamp(block)
            if age_s > self.max_pinned_block_age_s:
                raise Refusal(
                    protocol.BAD_REQUEST,
                    f"no data used: pinned block {block} is {age_s} s old; this node accepts blocks at most "
                    f"{self.max_pinned_block_age_s:g} s old, so that no round can predate recent revocations",
                )
            terms = self.ledger.study(study_id, block=block)
            live = self.ledger.is_study_live_for(study_id, self.hospital_account, block=block)
        except ChainUnavailable as exc:
            raise Refusal(protocol.CHAIN_UNAVAILABLE, f"no data used: {exc}") from exc
        except ChainReset as exc:
            raise Refusal(protocol.CHAIN_RESET, f"no data used: {exc}") from exc
        except ContractRejected as exc:
            raise Refusal(protocol.STUDY_NOT_ACCEPTED, f"no data used: {exc}") from exc
        except LedgerError as exc:
            raise Refusal(protocol.CONSENT_UNCLEAR, f"no data used: the chain's answer is unclear: {exc}") from exc
        if not live:
            raise Refusal(
                protocol.STUDY_NOT_ACCEPTED,
                f"no data used: at block {block} this hospital has not accepted study {StudyId(study_id).short(12)}, "
                "or the study is suspended or has ended, or the hospital is suspended",
            )
        if round_number is not None and not 1 <= round_number <= terms.rounds:
            raise Refusal(
                protocol.BAD_REQUEST,
                f"no data used: round {round_number} is outside study {StudyId(study_id).short(12)}'s rounds "
                f"1..{terms.rounds}",
            )
        return terms

    def admit(self, study_id: bytes, block: int, *, cohort: str, fields: tuple[str, ...]) -> Admitted:
        """The consented patients of `cohort` at `block`, their records decrypted (`consented`, then `open_records`)."""
        return self.open_records(study_id, block, self.consented(study_id, block, cohort=cohort), fields=fields)

    @monitoring.consent_read()
    def consented(self, study_id: bytes, block: int, *, cohort: str) -> list[Patient]:
        """The candidates of `cohort` whose consent held at `block`, as this hospital enrolled them; nothing is
        decrypted (the node writes its intent to read them before `open_records`).

        Consent is read by each candidate's enrolment index (`Ledger.consents_by_index`). A candidate without a
        trusted index has it resolved first, at `block`, from this hospital's own binding of pseudonym and consent
        key (`Ledger.enrolment_indexes`, consentBitmapFor's check): 0, another hospital's enrolment or another key,
        means no consent this round. A resolved index is stored with the registry and the block it was verified
        on, and trusted while that block is still this chain's (`_trusted_tags`): enrolments never change."""
        # Never-enrolled patients have no key to check against: they are no candidates at all.
        candidates: list[Patient] = [p for p in self.store.candidates(cohort) if p.consent_key]
        try:
            indexes = self._indexes(candidates, block)
            answer = self.ledger.consents_by_index(study_id, indexes, block=block)
        except ChainUnavailable as exc:
            raise Refusal(protocol.CHAIN_UNAVAILABLE, f"no data used: {exc}") from exc
        except ChainReset as exc:
            raise Refusal(protocol.CHAIN_RESET, f"no data used: {exc}") from exc
        except LedgerError as exc:
            raise Refusal(protocol.CONSENT_UNCLEAR, f"no data used: the consent answer is unclear: {exc}") from exc
        if len(answer) != len(candidates) or not all(isinstance(flag, bool) for flag in answer):
            raise Refusal(protocol.CONSENT_UNCLEAR, "no data used: the consent answer does not match the candidates")
        return [patient for patient, index, flag in zip(candidates, indexes, answer) if flag and index]

    def _indexes(self, candidates: list[Patient], block: int) -> list[int]:
        """Each candidate's enrolment index (0: not this hospital's enrolment with the stored key, at `block`):
        stored ones whose verification is still this chain's, the others resolved at `block` and stored."""
        identity = self._reader_identity()
        trusted = self._trusted_tags({p.registry_index_of for p in candidates if p.registry_index}, identity)
        indexes = [p.registry_index if p.registry_index and p.registry_index_of in trusted else 0 for p in candidates]
        unknown = [i for i, index in enumerate(indexes) if not index]
        if not unknown:
            return indexes
        found = self.ledger.enrolment_indexes(
            [Pseudonym.parse(candidates[i].pseudonym) for i in unknown], [candidates[i].consent_key for i in unknown],
            hospital=self.hospital_account, block=block,
        )
        if len(found) != len(unknown):
            raise LedgerError("the enrolment indexes do not match the candidates")
        tag = f"{identity}@{block}:{self.ledger.block_hash(block)[2:18]}"
        resolved = []
        for i, index in zip(unknown, found):
            indexes[i] = index
            if index:
                resolved.append({"patient_id": candidates[i].id, "index": index, "tag": tag})
        if resolved:
            table = Patient.__table__
            with self.store.engine.begin() as connection:
                connection.execute(
                    update(table).where(table.c.id == bindparam("patient_id"))
                    .values(registry_index=bindparam("index"), registry_index_of=bindparam("tag")),
                    resolved,
                )
        return indexes

    def _reader_identity(self) -> str:
        """Who verified a stored index: this deployment of the registry (`Ledger.registry_identity`) and this
        hospital, whose binding the index stands for."""
        named = f"{self.ledger.registry_identity()}:{self.hospital_account.lower()}"
        return keccak(text=named)[:8].hex()

    def _trusted_tags(self, tags: set[str | None], identity: str) -> set[str]:
        """The stored verifications ("<identity>@<block>:<hash>") still true here: made on this registry for this
        hospital, at a block this chain still has with that hash. A chain restarted from an older state file, or reorganised,
        may have given the index to another patient; then the patient's index is resolved again. Past
        MAX_VERIFICATIONS blocks, none is trusted: every candidate is resolved again, under one block."""
        if len(tags) > MAX_VERIFICATIONS:
            return set()
        trusted = set()
        for tag in tags:
            of, _, verified = (tag or "").partition("@")
            number, _, block_hash = verified.partition(":")
            if of != identity or not number.isdigit() or len(block_hash) != 16:
                continue
            try:
                if self.ledger.block_hash(int(number))[2:18] == block_hash:
                    trusted.add(tag)
            except (ChainUnavailable, ChainReset):
                raise
            except LedgerError:  # a block this chain does not have
                continue
        return trusted

    def open_records(self, study_id: bytes, block: int, patients: list[Patient], *, fields: tuple[str, ...]) -> Admitted:
        """Decrypt the records of `patients` (whose consent `consented` checked); only `fields` leave the gate."""
        records = []
        for patient in patients:
            try:
                record = self.vault.open_record(patient.clinical, associated=patient.pseudonym)
            except VaultError as exc:
                raise Refusal(protocol.RECORD_UNCLEAR, f"no data used: {exc}") from exc
            # Only the fields the task declared leave the gate.
            records.append({name: record.get(name) for name in fields})
        return Admitted(study_id, block, [Pseudonym.parse(p.pseudonym) for p in patients], records)
