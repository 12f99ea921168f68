"""Training runs: launch `flwr run` of the packaged Flower app against the SuperLink as a subprocess (with
coordinator/processes.py, as `twinledger coordinator run` does), follow its report, stop it with `flwr stop`,
and find its files.

A run's truth is its report (`<home>/runs/<name>/report.json`, rewritten by the ServerApp after every
round) plus what the console knows: who launched it, whether an operator stopped it, and whether the
`flwr run` process it started is still alive.
"""

from __future__ import annotations

import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session, select

from coordinator import processes, recovery
from coordinator.console.models import ConsoleRun
from coordinator.console.settings import ConsoleSettings, superlink_address
from coordinator.report import RunReport
from federation.ids import hex0x
from federation.web.models import now

FEDERATION = "consortium"
RUN_ID = re.compile(r"Successfully started run (\d+)")
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"


class RunError(Exception):
    """A run request the console refuses; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TrainingOptions:
    local_epochs: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    max_grad_norm: float | None = None
    strategy: str | None = None


def flower_env(settings: ConsoleSettings) -> dict[str, str]:
    return processes.flower_env(settings.flwr_home, bin_dir=settings.flwr_executable.parent)


def write_federation(settings: ConsoleSettings) -> None:
    """The `flwr` CLI's connection to the SuperLink, in $FLWR_HOME/config.toml."""
    host, port = superlink_address(settings.superlink)
    try:
        processes.write_flower_federation(settings.flwr_home, name=FEDERATION, superlink_port=port, host=host,
                                          root_certificates=settings.root_certificates)
    except processes.ProcessError as exc:
        raise RunError(f"cannot reach the SuperLink securely: {exc} (console setting root-certificates)",
                       status=503) from None


def superlink_answers(settings: ConsoleSettings, *, timeout_s: float = 1.0) -> bool:
    host, port = superlink_address(settings.superlink)
    return processes.port_open(port, host, timeout_s=timeout_s)


class RunManager:
    """The `flwr run` processes this console started (a restarted console knows runs from its database)."""

    def __init__(self, settings: ConsoleSettings):
        self.settings = settings
        self._processes: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def run_dir(self, name: str) -> Path:
        return self.settings.runs_dir / name

    def log_path(self, name: str) -> Path:
        return self.run_dir(name) / "flwr-run.log"

    def launch(self, db: Session, *, name: str, study_id: bytes, rounds: int, min_nodes: int, launched_by: str,
               options: TrainingOptions) -> ConsoleRun:
        if not re.fullmatch(NAME_PATTERN, name):
            raise RunError("a run name is 1 to 40 lower-case letters, digits or '-'", status=422)
        with self._lock:
            if db.exec(select(ConsoleRun).where(ConsoleRun.name == name)).first() or self.run_dir(name).exists():
                raise RunError(f"a run named {name!r} exists already: choose another name", status=409)
            if not superlink_answers(self.settings):
                raise RunError(f"the SuperLink at {self.settings.superlink} does not answer: start it "
                               "(twinledger coordinator superlink) or fix the console's superlink setting", status=409)
            config = {"study-id": hex0x(study_id), "coordinator-home": str(self.settings.home),
                      "num-rounds": rounds, "run-name": name, "min-nodes": min_nodes}
            for key, value in (("local-epochs", options.local_epochs), ("learning-rate", options.learning_rate),
                               ("batch-size", options.batch_size), ("max-grad-norm", options.max_grad_norm),
                               ("strategy", options.strategy)):
                if value is not None:
                    config[key] = value
            write_federation(self.settings)
            self.run_dir(name).mkdir(parents=True)
            with open(self.log_path(name), "ab") as log:
                process = subprocess.Popen(
                    processes.flwr_run_command(federation=FEDERATION, run_config=config,
                                               flwr=self.settings.flwr_executable),
                    stdout=log, stderr=subprocess.STDOUT, env=flower_env(self.settings), cwd=processes.FLOWER_APP_DIR,
                    start_new_session=True,
                )
            self._processes[name] = process
            row = ConsoleRun(name=name, study_id=hex0x(study_id), rounds=rounds, launched_by=launched_by)
            db.add(row)
            db.commit()
            db.refresh(row)
            return row

    def flwr_run_id(self, db: Session, row: ConsoleRun) -> str | None:
        """Flower's id of the run (decimal; a uint64 is too large for SQLite and JavaScript numbers)."""
        if row.flwr_run_id is None:
            try:
                found = RUN_ID.search(self.log_path(row.name).read_text(errors="replace"))
            except OSError:
                found = None
            if found:
                row.flwr_run_id = found.group(1)
                db.add(row)
                db.commit()
        return row.flwr_run_id

    def process_state(self, name: str) -> int | None | str:
        """None while the `flwr run` process lives, its exit code once it ended, "unknown" if not ours."""
        process = self._processes.get(name)
        return "unknown" if process is None else process.poll()

    def stop(self, db: Session, row: ConsoleRun, *, stopped_by: str) -> str:
        """`flwr stop <run-id>` on the SuperLink, then end the local `flwr run` stream; returns flwr's answer."""
        if row.stopped_at is not None:
            raise RunError(f"run {row.name!r} was stopped already", status=409)
        run_id = self.flwr_run_id(db, row)
        if run_id is None:
            if self.process_state(row.name) is None:
                raise RunError("the run has not started on the SuperLink yet: try again in a few seconds", status=409)
            raise RunError(f"run {row.name!r} never started on the SuperLink: nothing to stop", status=409)
        try:
            answer = subprocess.run(
                [str(self.settings.flwr_executable), "stop", run_id, FEDERATION], capture_output=True, text=True,
                env=flower_env(self.settings), cwd=processes.FLOWER_APP_DIR, timeout=self.settings.stop_timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise RunError(f"flwr stop did not answer within {self.settings.stop_timeout_s:g} s", status=504) from None
        output = (answer.stdout + answer.stderr).strip()
        if answer.returncode != 0 and "already" not in output.lower():
            raise RunError(f"the SuperLink refused to stop run {run_id}: {_last_line(output)}", status=409)
        process = self._processes.get(row.name)
        if process is not None and process.poll() is None:
            process.terminate()  # only the log stream: the SuperLink has stopped the run itself
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        row.stopped_by, row.stopped_at = stopped_by, now()
        db.add(row)
        db.commit()
        return _last_line(output) or f"run {run_id} stopped"

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _last_line(text: str) -> str:
    """The last line of a command's output, without the decorations (emoji, box drawing) Flower adds."""
    lines = [re.sub(r"^[^\w(]+|[^\w.)!?'\"]+$", "", line.strip()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else ""


def read_report(path: Path) -> RunReport | None:
    """The run report, or None while there is none (or it is being replaced, or is not a run report)."""
    try:
        return RunReport.load(path)
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return None


def status_of(manager: RunManager, row: ConsoleRun, report: RunReport | None) -> tuple[str, str]:
    """(status, message): starting, running, finished, failed or stopped."""
    if row.stopped_at is not None:
        return "stopped", f"stopped by {row.stopped_by}"
    if report is not None and report.status == "running":  # its ServerApp killed: ended now (issue 15)
        report = recovery.end_abandoned(manager.run_dir(row.name)) or report
    if report is not None and report.status in ("finished", "failed"):
        return report.status, report.message
    exit_code = manager.process_state(row.name)
    if exit_code not in (None, "unknown"):
        tail = _last_line(manager.log_tail(row.name))
        return "failed", f"flwr run exited with status {exit_code} before the run finished: {tail}"
    return ("running" if report is not None else "starting"), ""
