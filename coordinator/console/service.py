"""What the console does, as functions the JSON API and the pages share; every action lands in the log."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from pathlib import Path

from sqlmodel import Session, select

from contracts.ledger import LedgerError
from coordinator.console import studies
from coordinator.console.deps import Caller, ConsoleState
from federation.web.errors import WebError
from coordinator.console.models import ConsoleRun
from coordinator.console.runs import RunError, TrainingOptions, read_report, status_of
from coordinator.console.schemas import (
    AcceptanceOut, HospitalOut, RoundOut, RunCreate, RunFiles, RunOut, RunSummary, StudyCreate, StudyCreated, StudyOut,
)
from coordinator.report import HospitalSummary, RoundRecord, RunReport
from coordinator.report_page import write_report_page
from federation.web.sessions import log_action
from federation.ids import StudyId, hex0x

FILES = {"model.pt": "application/octet-stream", "report.json": "application/json", "report.html": "text/html"}


_log = log_action  # one action log helper for all the web apps


# ---- studies ----

def study_out(view: studies.StudyView, names: dict[str, str]) -> StudyOut:
    t = view.terms
    return StudyOut(
        study_id=hex0x(t.study_id), purpose=t.purpose, purpose_text=studies.PURPOSES.get(t.purpose, t.purpose),
        task_id=t.task_id, data_categories=studies.category_names(t.data_categories), epsilon_budget=t.epsilon_budget,
        delta=t.delta, rounds=t.rounds, ends_at=datetime.fromtimestamp(t.ends_at, timezone.utc),
        suspended=t.suspended, ended=view.ended, proposed_block=view.proposed_block,
        accepted_by=[AcceptanceOut(account=a.account, hospital=names.get(a.account), block=a.block) for a in view.accepted_by],
    )


def list_studies(state: ConsoleState) -> list[StudyOut]:
    names = studies.hospital_names(state.settings.runs_dir)
    return [study_out(v, names) for v in studies.list_studies(state.reader)]


def get_study(state: ConsoleState, study_id: str) -> StudyOut:
    view = studies.get_study(state.reader, StudyId.parse(study_id))
    return study_out(view, studies.hospital_names(state.settings.runs_dir))


def create_study(state: ConsoleState, db: Session, caller: Caller, body: StudyCreate, *, client: str) -> StudyCreated:
    what = (f"purpose {body.purpose}, task {body.task_id}, epsilon {body.epsilon_budget:g}, "
            f"delta 1e-{body.delta_exponent}, {body.rounds} rounds, ends {body.ends_on.isoformat()}")
    try:
        with state.chain_lock:
            study_id = studies.propose(state.operator, purpose=body.purpose, task_id=body.task_id,
                                       epsilon_budget=body.epsilon_budget, delta_exponent=body.delta_exponent,
                                       rounds=body.rounds, ends_on=body.ends_on, data_categories=list(body.data_categories))
    except (studies.StudyError, WebError, LedgerError) as exc:
        _log(db, caller, "study.create", outcome="failed", detail=f"{what}: {exc}", client=client)
        raise
    sid = hex0x(study_id)
    _log(db, caller, "study.create", target=sid, detail=what, client=client)
    return StudyCreated(study_id=sid, detail=f"study {sid} proposed on chain; hospitals can now accept it")


# ---- runs ----

def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _round_out(record: RoundRecord) -> RoundOut:
    metrics = {name: _num(value) for name, value in record.metrics.items()}
    for key in ("accuracy", "loss"):  # reports written before per-round metrics existed
        if key not in metrics and record.value(key) is not None:
            metrics[key] = _num(record.value(key))
    return RoundOut(
        round=record.round, status=record.status, block=record.block, accuracy=_num(record.value("accuracy")),
        loss=_num(record.value("loss")), metrics=metrics, used=record.used, test_used=record.test_used,
        epsilon={name: _num(value) for name, value in record.epsilon.items()}, errors=record.errors,
        anchor_block=record.anchor_block, seconds=_num(record.seconds),
    )


def _hospital_out(h: HospitalSummary) -> HospitalOut:
    return HospitalOut(name=h.name, account=h.account or None, patients=h.patients, consented=h.consented,
                       epsilon_spent=_num(h.epsilon_spent), epsilon_budget=_num(h.epsilon_budget))


def require_run(db: Session, name: str) -> ConsoleRun:
    row = db.exec(select(ConsoleRun).where(ConsoleRun.name == name)).first()
    if row is None:
        raise WebError(f"no run named {name!r} was launched from this console", status=404)
    return row


def summary(state: ConsoleState, row: ConsoleRun, report: RunReport | None = None) -> RunSummary:
    report = report or read_report(state.runs.run_dir(row.name) / "report.json")
    status, _ = status_of(state.runs, row, report)
    rounds = report.rounds if report is not None else []
    return RunSummary(name=row.name, study_id=row.study_id, status=status, rounds_planned=row.rounds,
                      rounds_done=sum(1 for r in rounds if r.status == "done"),
                      launched_by=row.launched_by, launched_at=row.launched_at, stopped_by=row.stopped_by)


def run_out(state: ConsoleState, db: Session, row: ConsoleRun) -> RunOut:
    run_dir = state.runs.run_dir(row.name)
    report = read_report(run_dir / "report.json")
    status, message = status_of(state.runs, row, report)
    rounds, hospitals = (report.rounds, report.hospitals) if report is not None else ([], [])
    return RunOut(
        **summary(state, row, report).model_dump(), message=message, flwr_run_id=state.runs.flwr_run_id(db, row),
        hospitals=[_hospital_out(h) for h in hospitals], rounds=[_round_out(r) for r in rounds],
        files=RunFiles(model=(run_dir / "model.pt").exists(), report_json=report is not None,
                       report_html=report is not None),
        log_tail=state.runs.log_tail(row.name) if status == "failed" else "",
    )


def list_runs(state: ConsoleState, db: Session) -> list[RunSummary]:
    rows = db.exec(select(ConsoleRun).order_by(ConsoleRun.id.desc())).all()
    return [summary(state, row) for row in rows]


def launch_run(state: ConsoleState, db: Session, caller: Caller, body: RunCreate, *, client: str) -> RunOut:
    what = f"study {body.study_id}, {body.rounds} rounds, at least {body.min_nodes} node(s)"
    try:
        terms = state.reader.study(StudyId.parse(body.study_id))
        if terms.rounds == 0:
            raise WebError(f"no study {body.study_id} on the consortium's chain", status=404)
        if terms.suspended or terms.ends_at <= time.time():
            raise WebError(f"study {body.study_id} is suspended or has ended: no hospital would train", status=409)
        if body.rounds > terms.rounds:
            raise WebError(f"the study allows {terms.rounds} round(s); {body.rounds} asked", status=422)
        options = TrainingOptions(local_epochs=body.local_epochs, learning_rate=body.learning_rate,
                                  batch_size=body.batch_size, max_grad_norm=body.max_grad_norm, strategy=body.strategy)
        row = state.runs.launch(db, name=body.name, study_id=StudyId.parse(body.study_id), rounds=body.rounds,
                                min_nodes=body.min_nodes, launched_by=caller.name, options=options)
    except (WebError, RunError, LedgerError) as exc:
        _log(db, caller, "run.launch", target=body.name, outcome="failed", detail=f"{what}: {exc}", client=client)
        raise
    _log(db, caller, "run.launch", target=row.name, detail=what, client=client)
    return run_out(state, db, row)


def stop_run(state: ConsoleState, db: Session, caller: Caller, name: str, *, client: str) -> str:
    row = require_run(db, name)
    try:
        answer = state.runs.stop(db, row, stopped_by=caller.name)
    except RunError as exc:
        _log(db, caller, "run.stop", target=name, outcome="failed", detail=str(exc), client=client)
        raise
    _log(db, caller, "run.stop", target=name, detail=answer, client=client)
    return answer


def run_file(state: ConsoleState, db: Session, caller: Caller, name: str, file: str, *, client: str) -> Path:
    """The path of a run's model.pt, report.json or report.html (written from the report on demand)."""
    row = require_run(db, name)
    run_dir = state.runs.run_dir(row.name)
    path = run_dir / file
    report_json = run_dir / "report.json"
    if file == "report.html" and report_json.exists():
        if not path.exists() or path.stat().st_mtime < report_json.stat().st_mtime:
            report = read_report(report_json)
            if report is not None:
                write_report_page(report, report_json)
    if not path.exists():
        _log(db, caller, "download", target=f"{name}/{file}", outcome="failed", detail="not there yet", client=client)
        what = "the model is saved when the run finishes" if file == "model.pt" else "the run has no report yet"
        raise WebError(f"run {name!r} has no {file}: {what}", status=404)
    _log(db, caller, "download", target=f"{name}/{file}", client=client)
    return path
