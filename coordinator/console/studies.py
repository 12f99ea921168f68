"""Studies on chain, as the console needs them: propose one with the operator's key, list every study the
consortium has with the hospitals that accepted it (from the contract's events)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import requests

from contracts.ledger import ChainUnavailable, Ledger, LedgerError, StudyTerms
from coordinator.report import RunReport
from federation.app_digest import packaged_app_digest
from federation.ids import StudyId
from federation.tasks import TASKS
from federation.tasks.data_path import data_categories
from federation.web.errors import WebError

# HL7 v3 PurposeOfUse codes a research study can name, in plain language.
PURPOSES = {
    "HRESCH": "health research",
    "BIORCH": "biomedical research",
    "CLINTRCH": "clinical trial research",
    "PUBHLTH": "public health",
    "POPHLTH": "population health",
    "HQUALIMP": "improving the quality of care",
    "MLTRAINING": "training machine-learning models",
}
# The contract keeps a 256-bit set of data categories a study may use: the shared ones and every task's own
# (federation/tasks/data_path.py `data_categories`), name -> bit.
DATA_CATEGORIES = data_categories(TASKS.values())


class StudyError(WebError):
    """A study request the console refuses; `status` is the HTTP status to answer with."""


@dataclass(frozen=True)
class Acceptance:
    account: str
    block: int


@dataclass(frozen=True)
class StudyView:
    terms: StudyTerms
    proposed_block: int
    accepted_by: list[Acceptance]

    @property
    def ended(self) -> bool:
        return self.terms.ends_at <= time.time()


def category_names(bits: int) -> list[str]:
    return [name for name, bit in DATA_CATEGORIES.items() if bits >> bit & 1]


def category_bits(names: list[str]) -> int:
    return sum(1 << DATA_CATEGORIES[name] for name in set(names))


def _logs(ledger: Ledger, event, **filters) -> list:
    try:
        return event.get_logs(from_block=ledger.deployment.deployed_block, argument_filters=filters or None)
    except (requests.exceptions.RequestException, ConnectionError, TimeoutError) as exc:
        raise ChainUnavailable(f"the chain cannot be reached ({type(exc).__name__})") from exc
    except Exception as exc:  # noqa: BLE001 - a provider error becomes the ledger's own error
        raise LedgerError(f"the chain could not list {event.event_name} events: {exc}") from exc


def list_studies(ledger: Ledger) -> list[StudyView]:
    """Every study proposed to the consortium, newest first, with the hospitals that accepted it."""
    accepted: dict[bytes, list[Acceptance]] = {}
    for log in sorted(_logs(ledger, ledger.consortium.events.StudyAccepted), key=lambda e: (e["blockNumber"], e["logIndex"])):
        accepted.setdefault(bytes(log["args"]["studyId"]), []).append(
            Acceptance(str(log["args"]["hospital"]), int(log["blockNumber"])))
    views = []
    for log in _logs(ledger, ledger.consortium.events.StudyProposed):
        study_id = bytes(log["args"]["studyId"])
        views.append(StudyView(ledger.study(study_id), int(log["blockNumber"]), accepted.get(study_id, [])))
    return sorted(views, key=lambda v: v.proposed_block, reverse=True)


def get_study(ledger: Ledger, study_id: bytes) -> StudyView:
    for view in list_studies(ledger):
        if view.terms.study_id == study_id:
            return view
    raise StudyError(f"no study 0x{study_id.hex()} on the consortium's chain", status=404)


def propose(operator: Ledger, *, purpose: str, task_id: str, epsilon_budget: float, delta_exponent: int, rounds: int,
            ends_on: date, data_categories: list[str]) -> bytes:
    """Propose a study (the data-use agreement) with the operator's key; returns its new id."""
    if purpose not in PURPOSES:
        raise StudyError(f"unknown purpose {purpose!r}; known: {', '.join(PURPOSES)}", status=422)
    if task_id not in TASKS:
        raise StudyError(f"unknown task {task_id!r}; known: {', '.join(TASKS)}", status=422)
    served = getattr(TASKS[task_id], "purpose", purpose)
    if served != purpose:  # the nodes refuse a study whose purpose is not the one its task serves
        raise StudyError(f"task {task_id} serves the purpose {served} ({PURPOSES.get(served, served)}), "
                         f"not {purpose}: no hospital would train for it", status=422)
    unknown = [c for c in data_categories if c not in DATA_CATEGORIES]
    if unknown:
        raise StudyError(f"unknown data categories {unknown}; known: {', '.join(DATA_CATEGORIES)}", status=422)
    ends_at = int(datetime(ends_on.year, ends_on.month, ends_on.day, 23, 59, 59, tzinfo=timezone.utc).timestamp())
    if ends_at <= time.time():
        raise StudyError(f"the end date {ends_on.isoformat()} is not in the future", status=422)
    if ends_at >= 2**32:
        raise StudyError("the end date must be before 2106", status=422)
    study_id = StudyId.new()
    operator.propose_study(study_id, purpose=purpose, task_id=task_id, epsilon_budget=epsilon_budget,
                           delta_exponent=delta_exponent, rounds=rounds, ends_at=ends_at,
                           data_categories=category_bits(data_categories), app_digest=packaged_app_digest())
    return study_id


def hospital_names(runs_dir: Path) -> dict[str, str]:
    """Hospital account -> name, as the hospitals' nodes reported it in earlier runs (the chain has no names)."""
    names: dict[str, str] = {}
    for path in sorted(runs_dir.glob("*/report.json"), key=lambda p: p.stat().st_mtime):
        try:
            report = RunReport.load(path)
        except (OSError, ValueError):  # being replaced, or not a run report
            continue
        names.update({hospital.account: hospital.name for hospital in report.hospitals if hospital.account})
    return names
