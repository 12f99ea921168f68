"""A run's report as types: what the coordinator writes to `<home>/runs/<name>/report.json` after every round.

`RunReport` holds the study's terms, the hospitals in the run and one `RoundRecord` per round;
`RunReport.load(path)` reads a saved report back, `as_dict()` gives the JSON shape the readers know
(report page, operator console, demo, benchmarks). Every model keeps keys it does not declare: a round
record carries the task's `report_keys` (e.g. `accuracy`, `loss`) at its top level, and the demo adds
`revoked`, `audit`, `baseline`, ... to the report it writes. Fields a reader may meet missing in an older
or partial report (`block`, the study's terms) are optional.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from contracts.ledger import StudyTerms
from federation.ids import StudyId

# A round record leaves these out until they are known (readers test `"anchor_block" in record`).
LATE_ROUND_KEYS = ("seconds", "training_seconds", "model_hash", "anchor_block")


class _Open(BaseModel):
    """Undeclared keys are kept (and written back): the task's metrics, the demo's additions."""

    model_config = ConfigDict(extra="allow")

    def extra(self, key: str, default: Any = None) -> Any:
        return (self.__pydantic_extra__ or {}).get(key, default)


class StudySummary(_Open):
    id: str | None = None  # 0x and 64 hex digits
    purpose: str | None = None
    task: str | None = None
    epsilon_budget: float | None = None
    delta: float | None = None
    rounds: int | None = None
    metric: dict[str, Any] | None = None  # the task's headline metric (federation/tasks/base.py Metric)
    # What a round's `used` counts: the nodes' noisy aggregation weight, "patients" unless the task weighs by another
    # count (the survival task: "events").
    weighted_by: str = "patients"

    @classmethod
    def of(cls, terms: StudyTerms, metric: dict | None, weighted_by: str = "patients") -> "StudySummary":
        return cls(id=str(StudyId(terms.study_id)), purpose=terms.purpose, task=terms.task_id,
                   epsilon_budget=terms.epsilon_budget, delta=terms.delta, rounds=terms.rounds, metric=metric,
                   weighted_by=weighted_by)


class HospitalSummary(_Open):
    name: str
    account: str | None = None
    patients: int | None = None
    consented: int | None = None  # consented test patients at the last evaluation
    epsilon_spent: float | None = 0.0  # None: infinite (a non-private study)
    epsilon_budget: float | None = None
    # The hospital's privacy account as its signed replies state it: one entry per release, in order, each
    # {"round", "release" ("train": weights and the noisy count; "evaluate": the noisy sums), "epsilon_after",
    # "cost"}; empty in reports written before evaluation was charged.
    privacy_account: list[dict[str, Any]] = Field(default_factory=list)

    def add_release(self, round_number: int, release: str, epsilon_after: float | None) -> None:
        """Add one release the hospital signed for (epsilon None: a non-private study, nothing to count)."""
        if epsilon_after is None:
            return
        before = self.privacy_account[-1]["epsilon_after"] if self.privacy_account else 0.0
        self.privacy_account.append({"round": round_number, "release": release, "epsilon_after": epsilon_after,
                                     "cost": round(max(epsilon_after - before, 0.0), 6)})


class SignedReply(_Open):
    """A reply the coordinator verified: its signer (the hospital account it counted for), the node it came
    from, the RoundReply it signed (federation.protocol.RoundReply.as_dict) and the EIP-712 signature, so
    that an auditor can recover the signer again (contracts/audit.py)."""

    hospital: str
    node: str = ""
    reply: dict[str, Any]
    signature: str  # 0x and 130 hex digits


class RoundRecord(_Open):
    """One round, per hospital name where it is per hospital. `status` is "training", then "evaluating"
    (saved so operators see training results early), then "done"."""

    round: int
    block: int | None = None  # the pinned block
    status: Literal["training", "evaluating", "done"] = "done"
    metrics: dict[str, float | None] = Field(default_factory=dict)  # the pooled evaluation
    # Each hospital's metrics from its own (noisy) sums: kept beside the pooled ones (a hospital served worse shows).
    hospital_metrics: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    # The task's subgroups (axis -> group -> metrics), from the same added-up sums: a group served worse shows.
    subgroup_metrics: dict[str, dict[str, dict[str, float | None]]] = Field(default_factory=dict)
    used: dict[str, int] = Field(default_factory=dict)  # patients each hospital trained on
    test_used: dict[str, int] = Field(default_factory=dict)  # test patients each hospital evaluated
    epsilon: dict[str, float | None] = Field(default_factory=dict)  # cumulative; None is infinite
    train_seconds: dict[str, float] = Field(default_factory=dict)  # each node's own training wall time
    errors: dict[str, str] = Field(default_factory=dict)  # by hospital name, and "coordinator"
    replies: list[SignedReply] = Field(default_factory=list)  # the verified, signed replies of both phases
    seconds: float | None = None
    training_seconds: float | None = None
    model_hash: str | None = None
    anchor_block: int | None = None

    @model_serializer(mode="wrap")
    def _leave_out_unknowns(self, handler) -> dict:
        data = handler(self)
        for key in LATE_ROUND_KEYS:
            if data.get(key) is None:
                data.pop(key, None)
        return data

    def value(self, name: str) -> float | None:
        """A metric of this round: from the pooled metrics, else from the top level (older reports)."""
        value = self.metrics.get(name, self.extra(name))
        return value if isinstance(value, (int, float)) else None

    def set_report_keys(self, keys: tuple[str, ...]) -> None:
        """Copy the task's `report_keys` from the metrics to the top level, None where missing."""
        for key in keys:
            setattr(self, key, self.metrics.get(key))


class RunReport(_Open):
    status: Literal["running", "finished", "failed"] = "running"
    message: str = ""
    started_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    study: StudySummary = Field(default_factory=StudySummary)
    hospitals: list[HospitalSummary] = Field(default_factory=list)
    rounds: list[RoundRecord] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path | str) -> "RunReport":
        """A saved report; ValueError (pydantic's ValidationError) when the file is not one."""
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def load_if_present(cls, path: Path) -> "RunReport | None":
        """The report as it stands, or None before the first one (it is replaced atomically)."""
        return cls.load(path) if path.exists() else None

    @classmethod
    def coerce(cls, report: "RunReport | dict") -> "RunReport":
        return report if isinstance(report, RunReport) else cls.model_validate(report)

    def as_dict(self) -> dict:
        """The JSON shape of report.json (null for an infinite epsilon)."""
        return self.model_dump(mode="json")

    def save(self, path: Path) -> None:
        """Write atomically: a reader never sees half a report."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=1), encoding="utf-8")
        tmp.replace(path)

    def hospital_names(self) -> list[str]:
        """The hospitals of the run, then any seen only in rounds' records, in order of appearance."""
        names = [h.name for h in self.hospitals]
        for record in self.rounds:
            names += [n for n in record.used if n not in names]
        return names
