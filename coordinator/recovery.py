"""How a run ends when its processes do not: a final report saying why, never "running" forever.

Issue 15 saw a SuperLink killed mid-run leave `report.json` at "running" and the CLI say "the run is running:
(no message)". A run does not resume after its ServerApp stopped: a study's rounds run once (a round's privacy
budget is spent at the nodes whether or not it was anchored, and StudyRun refuses a study with anchored rounds),
so the honest end is a final report naming the round that was cut and the rounds that stay anchored on chain.
Three ways get there (docs/operations.md, "When things fail"):

- the ServerApp is signalled (its SuperLink or SuperExec stopped, `flwr stop`): Flower's exit handlers run
  `end_on_exit`, and the ServerApp's own `except` writes the same report;
- the ServerApp's SuperExec is gone (it exits when its SuperLink dies): `watch_parent` ends the run from a thread
  of its own, then interrupts the main thread. Flower's own parent monitor raises SIGINT in *its* thread, and a
  main thread blocked on a lock (the pushes to a dead SuperLink, retried without end) never ran the handler:
  the report stayed "running" (the fault suite's flaky SuperLink kill);
- the SuperLink hangs (alive, answering nothing: SIGSTOP, a deadlock, a full disk under its database): Flower
  retries a request to it without end, so the same watch ends the run once a request to the SuperLink has gone
  unanswered for longer than the round timeout (`WatchedGrid`; no request of a healthy link takes that long),
  naming the SuperLink as unresponsive;
- the ServerApp is killed outright: it leaves `serverapp.pid` beside the report, and whoever looks next on that
  machine ends the run: `twinledger coordinator run` when `flwr run` returns, and a (re)starting SuperLink
  that follows the coordinator's home (`end_abandoned_runs`);
- the ServerApp cannot start its run (the ledger does not open, the study cannot be read): `write_failed`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from coordinator.report import RunReport

log = logging.getLogger("twinledger.coordinator")
OWNER_FILE = "serverapp.pid"  # "PID HOST" of the ServerApp process writing the run's report
PARENT_GONE = ("the coordinator's ServerApp was stopped: its SuperExec is gone (the SuperLink that started it "
               "was stopped or killed)")


def claim(run_dir: Path) -> None:
    """Record that this process writes the run's report (removed by `release` when the run ends)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n", encoding="utf-8")


def release(run_dir: Path) -> None:
    (run_dir / OWNER_FILE).unlink(missing_ok=True)


def owner(run_dir: Path) -> tuple[int, bool | None] | None:
    """(pid, alive) of the process that writes the run's report; alive is None when it runs on another machine.
    None when no process claims the run."""
    try:
        pid_text, _, host = (run_dir / OWNER_FILE).read_text(encoding="utf-8").strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if host != socket.gethostname():
        return pid, None
    return pid, _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a zombie has exited: only its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def ended_message(report: RunReport, cause: str) -> str:
    """`cause`, the round it cut, and what stays: the rounds anchored on chain."""
    cut = next((r.round for r in report.rounds if r.status != "done"), len(report.rounds) + 1)
    anchored = [r.round for r in report.rounds if r.anchor_block is not None]
    kept = f"rounds {', '.join(map(str, anchored))} stay anchored on chain" if anchored else "no round was anchored"
    where = f"during round {cut}" if report.rounds or cut > 1 else "before round 1"
    return (f"{cause} {where}; {kept}. A run does not resume (a study's rounds run once): propose a new study "
            "to train again")


def end_run(report_path: Path, cause: str) -> RunReport | None:
    """Mark a report still "running" failed with `cause` (and the rounds it leaves); the report, or None."""
    try:
        report = RunReport.load(report_path)
    except (OSError, ValueError):
        return None
    if report.status == "running":
        report.status, report.message = "failed", ended_message(report, cause)
        report.save(report_path)
        log.warning("run %s ended: %s", report_path.parent.name, report.message)
    return report


def end_abandoned(run_dir: Path) -> RunReport | None:
    """End the run in `run_dir` if its report says "running" while the ServerApp that wrote it is gone (on this
    machine); the report as it then is, or None when there is none."""
    claimed = owner(run_dir)
    if claimed is not None and claimed[1] is False:
        report = end_run(run_dir / "report.json",
                         f"the coordinator's ServerApp (pid {claimed[0]}) stopped without a final report (killed, "
                         "or its SuperLink was)")
        release(run_dir)
        return report
    try:
        return RunReport.load(run_dir / "report.json")
    except (OSError, ValueError):
        return None


def end_abandoned_runs(runs_dir: Path) -> list[str]:
    """End every abandoned run under a coordinator's `runs_dir` (a SuperLink starting: no ServerApp of an
    earlier one survives it); the names of the runs ended."""
    ended = []
    for pid_file in sorted(Path(runs_dir).glob(f"*/{OWNER_FILE}")):
        before = owner(pid_file.parent)
        report = end_abandoned(pid_file.parent)
        if before is not None and before[1] is False and report is not None and report.status == "failed":
            ended.append(pid_file.parent.name)
    return ended


def write_failed(run_dir: Path, message: str) -> None:
    """A final report for a run that could not start (its ledger or study could not be read)."""
    report = RunReport(status="failed", message=message)
    report.save(run_dir / "report.json")


def stopped_cause(exc: BaseException) -> str:
    """What an exception that ends the ServerApp says about why."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return ("the coordinator's ServerApp was stopped (its SuperLink or SuperExec stopped, or the run was "
                "stopped with flwr stop)")
    return str(exc) or type(exc).__name__


class WatchedGrid:
    """The run's Flower Grid, timing every request to the SuperLink: `unanswered_s` is how long the request in
    flight (if any) has waited. Flower's own Grid retries a request to an unresponsive SuperLink without end."""

    TIMED = frozenset({"push_messages", "pull_messages", "get_node_ids", "get_nodes"})  # each one request

    def __init__(self, grid):
        self._grid = grid
        self._since: float | None = None

    def __getattr__(self, name):
        attr = getattr(self._grid, name)
        if name not in self.TIMED:
            return attr

        def timed(*args, **kwargs):
            self._since = time.monotonic()
            try:
                return attr(*args, **kwargs)
            finally:
                self._since = None

        return timed

    def unanswered_s(self) -> float:
        since = self._since
        return 0.0 if since is None else time.monotonic() - since


def superlink_unresponsive(grid: WatchedGrid, *, timeout_s: float) -> Callable[[], str | None]:
    """A check for `watch_parent`: the cause to end the run with once a request to the SuperLink has waited
    longer than `timeout_s`, else None."""
    def check() -> str | None:
        waited = grid.unanswered_s()
        if waited <= timeout_s:
            return None
        return (f"the coordinator's ServerApp was stopped: the SuperLink is unresponsive (a request to it waited "
                f"longer than the round timeout, {timeout_s:g} s; hung or unreachable)")
    return check


def watch_parent(end: Callable[[str], None], *, also: Callable[[], str | None] = lambda: None,
                 poll_s: float = 0.25, exit_after_s: float = 15.0) -> threading.Event:
    """Call `end(PARENT_GONE)` from a thread of its own as soon as this process's parent (the SuperExec) dies, or
    `end(cause)` as soon as the check `also` names one; then interrupt the main thread with SIGINT (Flower's
    graceful exit) and, `exit_after_s` later, exit outright if it has not. Set the returned event to stop
    watching (the run ended by itself).

    The parent is taken as gone when `os.getppid()` changes: a dead parent's children are re-parented at once,
    whereas Flower's `kill(pid, 0)` sees an unreaped (zombie) parent as alive."""
    parent, stop = os.getppid(), threading.Event()

    def watch() -> None:
        cause = None
        while cause is None and not stop.wait(poll_s):
            cause = PARENT_GONE if os.getppid() != parent else also()
        if cause is None:
            return
        try:
            end(cause)
        finally:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # a signal *to* the main thread
            if not stop.wait(exit_after_s):  # wakes a wait on a lock there; a thread's own signal does not
                log.error("the ServerApp did not exit %g s after its run ended (%s): exiting now", exit_after_s, cause)
                os._exit(1)

    threading.Thread(target=watch, name="run-watch", daemon=True).start()
    return stop
