"""The node's database (SQLModel): patients with encrypted clinical data and their sources, round usage, privacy
spending.

The pseudonym-to-patient map lives only here; deleting a patient's row is how a patient is erased.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timezone

from sqlalchemy import inspect, text
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlmodel import Field, Session, SQLModel, create_engine, select

from federation import protocol


class StoreUnavailable(RuntimeError):
    """The node's database cannot be opened or written: `code` is protocol.STORE_UNAVAILABLE, the message says
    which database and what hospital IT can do. Nothing is decrypted after it (the write-ahead intent fails
    first)."""

    code = protocol.STORE_UNAVAILABLE

    @property
    def reason(self) -> str:
        return str(self)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Patient(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    record_number: str = Field(index=True, unique=True)  # the hospital's own identifier
    pseudonym: str = Field(index=True, unique=True)  # 0x-hex of 32 random bytes; the only thing on chain
    consent_key: str | None = None  # the patient's consent address, once enrolled on chain
    cohort: str = Field(index=True)  # "train", "test" or "incomplete"
    kind: str = Field(default="heart-disease", index=True)  # which tasks can read it: a task's record_kind
    source: str = ""
    clinical: bytes  # AES-GCM sealed JSON of the clinical fields
    # The person the record belongs to ("system|value", node/records/provenance.py person_key): records of one
    # person are one unit of privacy (node/privacy.py one_record_per_person). None: the record is its own person.
    person: str | None = Field(default=None, index=True)
    imported_at: datetime = Field(default_factory=_now)
    # The patient's enrolment index on the consent registry, once the consent gate verified at a pinned block that
    # this hospital enrolled `pseudonym` with `consent_key` (node/consent_gate.py), and what it was verified on:
    # "<digest of the registry's identity and the hospital>@<block>:<the block's hash, 16 hex digits>". Enrolments never change, so the gate reads
    # consent by index while that block is still the chain's. Whoever changes `pseudonym` or `consent_key` of an
    # enrolled patient must clear both (nothing does today: both are written once, at import and at enrolment).
    registry_index: int | None = None
    registry_index_of: str | None = None


class PatientSource(SQLModel, table=True):
    """Where a patient's record came from, one row per patient (node/records/writer.py writes it):

    - `identifier_system`: the identifier system of the record number (a FHIR identifier's `system`, or the node's
      local record-number system for a CSV): record numbers match across files on (system, value). In the clear:
      it names the hospital's numbering, not the patient.
    - `provenance`: each stored value's provenance (resource id, code, time, file), AES-GCM sealed like
      `Patient.clinical` (which tests were done when is itself clinical), bound to "<pseudonym>/provenance".
    Erasing a patient erases this row with it (ON DELETE CASCADE; delete it first where foreign keys are off)."""

    pseudonym: str = Field(primary_key=True, foreign_key="patient.pseudonym", ondelete="CASCADE")
    identifier_system: str
    provenance: bytes | None = None
    updated_at: datetime = Field(default_factory=_now)


# The life of a usage entry: written as an intent before any record is decrypted, then completed (used: a reply
# went out, or was lost on its way) or voided (refused after the intent: nothing trained or released). An intent
# left as it is means the node stopped while reading: the records may have been used.
USAGE_INTENT, USAGE_COMPLETED, USAGE_VOIDED = "intent", "completed", "voided"


class RoundUsage(SQLModel, table=True):
    """The exact set of pseudonyms a node read in one phase of a round: the node's audit log (write-ahead)."""

    id: int | None = Field(default=None, primary_key=True)
    study_id: str = Field(index=True)
    round: int
    phase: str  # "train" or "evaluate"
    block: int
    commitment: str
    pseudonyms: str  # JSON list of 0x-hex pseudonyms
    recorded_at: datetime = Field(default_factory=_now)
    status: str = Field(default=USAGE_COMPLETED, index=True)  # USAGE_INTENT, USAGE_COMPLETED or USAGE_VOIDED
    # Erased patients whose pseudonyms left `pseudonyms` (node/erase.py): JSON list, one {"block", "verified_at"}
    # per patient, saying the chain showed their consent at `block` (the entry's) when they were erased. The entry
    # then keeps `commitment` as the node computed it, over the pseudonyms before redaction.
    redactions: str = Field(default="[]", sa_column_kwargs={"server_default": "[]"})

    @property
    def pseudonym_list(self) -> list[str]:
        return json.loads(self.pseudonyms)

    @property
    def redaction_list(self) -> list[dict]:
        return json.loads(self.redactions or "[]")

    def phase_commitment(self) -> bytes:
        """The commitment to this phase's pseudonyms: recomputed from them, or the stored one once an erased
        patient's pseudonym left the entry (it can no longer be recomputed)."""
        from federation.commitment import pseudonym_commitment
        from federation.ids import Digest, Pseudonym

        if self.redaction_list:
            return Digest.parse(self.commitment)
        return pseudonym_commitment(Pseudonym.parse(p) for p in self.pseudonym_list)


class PrivacySpend(SQLModel, table=True):
    """One release of the study's privacy account, as the accountant saw it: enough to recompute epsilon.

    `release` says what left the node: "train" (DP-SGD steps: model weights), "evaluate" (one Gaussian release
    of the evaluation sums, sample rate 1 and one step) or "count" (the noisy training count, `value`)."""

    id: int | None = Field(default=None, primary_key=True)
    study_id: str = Field(index=True)
    round: int
    release: str = "train"
    value: float | None = None  # what a "count" release released (it is reused as the node's weight)
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    epsilon_after: float
    recorded_at: datetime = Field(default_factory=_now)


class EvaluationPlan(SQLModel, table=True):
    """How many of a study's rounds will be evaluated here: fixed by the first round request that reached the
    privacy account (node/privacy.py `PrivacyBudget.bind`), never changed after. The evaluation share's noise is
    planned for exactly this many evaluation releases, and no more are answered."""

    study_id: str = Field(primary_key=True)
    evaluations: int
    declared_in_round: int
    recorded_at: datetime = Field(default_factory=_now)


class RoundRefusal(SQLModel, table=True):
    """A round phase the node refused (it used no data), with the protocol error code and the reason."""

    id: int | None = Field(default=None, primary_key=True)
    study_id: str = Field(index=True)
    round: int
    phase: str  # "train", "evaluate" or "query"
    code: int
    reason: str
    recorded_at: datetime = Field(default_factory=_now)


class Store:
    def __init__(self, database_url: str, *, kind: str | None = None):
        connect_args = {"check_same_thread": False} if database_url.startswith("sqlite") else {}
        self.engine = create_engine(database_url, connect_args=connect_args)
        try:
            from federation.migrations import migrate
            from node.migrations import NODE_SCHEMA

            migrate(self.engine, NODE_SCHEMA)  # node/migrations; a create_all database from before is stamped
        except DatabaseError as exc:  # a truncated or damaged file, a read-only disk on first use
            raise StoreUnavailable(
                f"the node's database {self.engine.url.database or database_url} cannot be opened "
                f"({exc.orig or exc}): restore it from a backup, or check the disk it is on") from None
        self.kind = kind

    @classmethod
    def _sharing(cls, engine, kind: str | None) -> "Store":
        store = cls.__new__(cls)
        store.engine, store.kind = engine, kind
        return store

    def for_kind(self, kind: str) -> "Store":
        """The same database, whose `candidates` are only patients of this kind (what one task may read)."""
        return Store._sharing(self.engine, kind)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def candidates(self, cohort: str) -> list[Patient]:
        query = select(Patient).where(Patient.cohort == cohort)
        if self.kind is not None:
            query = query.where(Patient.kind == self.kind)
        with self.session() as session:
            return list(session.exec(query.order_by(Patient.id)))

    def patients(self) -> list[Patient]:
        with self.session() as session:
            return list(session.exec(select(Patient).order_by(Patient.id)))

    def persons_of(self, pseudonyms) -> dict[str, str]:
        """Each pseudonym's person (the pseudonym itself for a record linked to none)."""
        wanted = [str(p) for p in pseudonyms]
        found: dict[str, str] = {}
        with self.session() as session:
            for at in range(0, len(wanted), 500):  # bounded IN lists
                query = select(Patient.pseudonym, Patient.person).where(Patient.pseudonym.in_(wanted[at:at + 500]))
                found.update({pseudonym: person for pseudonym, person in session.exec(query) if person})
        return {p: found.get(p, p) for p in wanted}

    def record_usage(self, usage: RoundUsage) -> None:
        with self.session() as session:
            session.add(usage)
            session.commit()

    @contextmanager
    def _writing_before_reading(self, what: str):
        """A write that comes before any record is decrypted: a read-only or full disk refuses here, not later."""
        try:
            yield
        except OperationalError as exc:
            raise StoreUnavailable(
                f"no data used: the node's database {self.engine.url.database} cannot be written ({exc.orig}), so "
                f"{what} and nothing was decrypted: free disk space or make the node home writable") from None

    def record_intent(self, usage: RoundUsage) -> int:
        """Write `usage` as an intent (durably, before anything is decrypted); returns its id."""
        usage.status = USAGE_INTENT
        with self._writing_before_reading("the intent to read the cohort could not be logged"), \
                self.session() as session:
            session.add(usage)
            session.commit()
            return usage.id

    def settle_usage(self, usage_id: int, *, status: str) -> None:
        """An intent completed (USAGE_COMPLETED) or voided (USAGE_VOIDED)."""
        if status not in (USAGE_COMPLETED, USAGE_VOIDED):
            raise ValueError(f"an intent is settled as completed or voided, not {status!r}")
        with self.session() as session:
            usage = session.get(RoundUsage, usage_id)
            usage.status = status
            session.add(usage)
            session.commit()

    def usage(self, study_id: str | None = None) -> list[RoundUsage]:
        """The completed uses (what the node replied about, or would have)."""
        return [u for u in self.usage_log(study_id) if u.status == USAGE_COMPLETED]

    def usage_log(self, study_id: str | None = None) -> list[RoundUsage]:
        """Every entry, intents and voided ones too: what an auditor reads."""
        with self.session() as session:
            query = select(RoundUsage).order_by(RoundUsage.id)
            if study_id:
                query = query.where(RoundUsage.study_id == study_id)
            return list(session.exec(query))

    def spends(self, study_id: str) -> list[PrivacySpend]:
        with self.session() as session:
            return list(
                session.exec(select(PrivacySpend).where(PrivacySpend.study_id == study_id).order_by(PrivacySpend.id))
            )

    def record_spend(self, spends: list[PrivacySpend]) -> None:
        with self.session() as session:
            session.add_all(spends)
            session.commit()

    def evaluation_plan(self, study_id: str) -> EvaluationPlan | None:
        with self.session() as session:
            return session.get(EvaluationPlan, study_id)

    def fix_evaluation_plan(self, study_id: str, *, evaluations: int, round_number: int) -> EvaluationPlan:
        """The study's plan: the one already fixed, or this one, fixed now (the first writer wins)."""
        from sqlalchemy.exc import IntegrityError

        if (plan := self.evaluation_plan(study_id)) is not None:
            return plan
        try:
            with self._writing_before_reading("the study's evaluation plan could not be fixed"), \
                    self.session() as session:
                session.add(EvaluationPlan(study_id=study_id, evaluations=evaluations, declared_in_round=round_number))
                session.commit()
        except IntegrityError:  # another request fixed it first
            pass
        return self.evaluation_plan(study_id)

    def record_refusal(self, refusal: RoundRefusal) -> None:
        with self.session() as session:
            session.add(refusal)
            session.commit()

    def refusals(self, study_id: str) -> list[RoundRefusal]:
        with self.session() as session:
            query = select(RoundRefusal).where(RoundRefusal.study_id == study_id).order_by(RoundRefusal.id)
            return list(session.exec(query))


# The fix-ups below bring a create_all database from before migrations to the baseline (node/migrations).


def _add_kind_column(engine) -> None:
    """Databases made before patients had a kind hold only heart-disease records: add the column so."""
    columns = {c["name"] for c in inspect(engine).get_columns("patient")}
    if "kind" not in columns:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE patient ADD COLUMN kind VARCHAR NOT NULL DEFAULT 'heart-disease'"))


def _add_release_columns(engine) -> None:
    """Privacy accounts made before evaluation was charged hold only DP-SGD steps."""
    columns = {c["name"] for c in inspect(engine).get_columns("privacyspend")}
    with engine.begin() as connection:
        if "release" not in columns:
            connection.execute(text("ALTER TABLE privacyspend ADD COLUMN release VARCHAR NOT NULL DEFAULT 'train'"))
        if "value" not in columns:
            connection.execute(text("ALTER TABLE privacyspend ADD COLUMN value FLOAT"))


def _add_usage_status_column(engine) -> None:
    """Usage logs made before the write-ahead log hold only completed uses: add the column so."""
    columns = {c["name"] for c in inspect(engine).get_columns("roundusage")}
    if "status" not in columns:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE roundusage ADD COLUMN status VARCHAR NOT NULL DEFAULT 'completed'"))
