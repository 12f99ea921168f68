"""Fault: the ServerApp stops mid-run (issue 15: a SuperLink killed mid-run left report.json at "running" forever
and the CLI said "the run is running: (no message)"), or cannot open the ledger (no report at all). Each ends
with a final report saying why, which round was cut and which rounds stay anchored (coordinator/recovery.py);
the real processes: test_federation_faults.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
from flwr.app import Context, MessageType, RecordDict

from coordinator import recovery, server_app
from coordinator.run_outcome import check_report as _check_report
from coordinator.report import RoundRecord, RunReport
from coordinator.settings import CoordinatorSettings
from coordinator.study_run import StudyRun
from federation.ids import StudyId
from tests.coordinator.test_study_run import FakeGrid, FakeHospital, options, superlink_identity  # noqa: F401

pytestmark = pytest.mark.timeout(120)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _running_report(run_dir, *, pid: int) -> None:
    report = RunReport(rounds=[RoundRecord(round=1, status="done", anchor_block=40),
                               RoundRecord(round=2, status="training")])
    report.save(run_dir / "report.json")
    (run_dir / recovery.OWNER_FILE).write_text(f"{pid} {__import__('socket').gethostname()}\n")


class StoppedInRound2(FakeGrid):
    """The ServerApp is signalled during round 2's training (its SuperLink stopped): Flower raises SystemExit."""

    def push_messages(self, messages):
        messages = list(messages)
        if any(m.metadata.message_type == MessageType.TRAIN and m.metadata.group_id == "2" for m in messages):
            raise SystemExit(1)
        return super().push_messages(messages)


def test_a_serverapp_stopped_mid_run_ends_its_report_naming_the_round_cut_and_the_rounds_anchored(chain, tmp_path):
    run = StudyRun(StoppedInRound2({1: FakeHospital("alpha", chain.hospital)}), chain.coordinator,
                   options(chain, num_rounds=3), tmp_path / "run")
    with pytest.raises(SystemExit):
        run.run()
    server_app.end_on_exit(run)  # Flower's exit handler, as the signal runs it
    report = RunReport.load(tmp_path / "run" / "report.json")
    assert report.status == "failed"
    assert report.message.startswith("the coordinator's ServerApp was stopped")
    assert "during round 2; rounds 1 stay anchored on chain" in report.message
    assert "does not resume" in report.message


def test_a_run_whose_serverapp_was_killed_is_ended_by_the_next_superlink_and_live_runs_are_left(tmp_path):
    runs = tmp_path / "runs"
    for name, pid in (("killed", _dead_pid()), ("live", __import__("os").getpid())):
        (runs / name).mkdir(parents=True)
        _running_report(runs / name, pid=pid)
    assert recovery.end_abandoned_runs(runs) == ["killed"]
    killed, live = (RunReport.load(runs / n / "report.json") for n in ("killed", "live"))
    assert killed.status == "failed" and "stopped without a final report" in killed.message
    assert "during round 2; rounds 1 stay anchored on chain" in killed.message
    assert live.status == "running" and not (runs / "killed" / recovery.OWNER_FILE).exists()


def test_the_cli_never_says_running_with_no_message(tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "run").mkdir(parents=True)
    _running_report(runs / "run", pid=_dead_pid())
    assert _check_report(runs, "run", started=0, log="flwr-run.log", flwr_code=1) == 1
    err = capsys.readouterr().err
    assert "(no message)" not in err and "the run is failed: the coordinator's ServerApp (pid" in err
    assert RunReport.load(runs / "run" / "report.json").status == "failed"


def test_a_serverapp_that_cannot_open_the_ledger_writes_a_final_report(tmp_path):
    home = tmp_path / "coordinator"
    CoordinatorSettings(home=home, rpc_url="http://127.0.0.1:9", deployment_file=home / "missing.json",
                        chain_timeout_s=1).save()
    run_config = {"study-id": str(StudyId.new()), "coordinator-home": str(home), "run-name": "r"}
    with pytest.raises(Exception):
        server_app.main(FakeGrid({}), Context(run_id=9, node_id=0, node_config={}, state=RecordDict(),
                                              run_config=run_config))
    report = RunReport.load(home / "runs" / "r" / "report.json")
    assert report.status == "failed" and report.message.startswith("the run could not start: ")
    assert "missing.json" in report.message


def test_the_operator_console_shows_a_killed_runs_end_not_running(tmp_path):
    from types import SimpleNamespace

    from coordinator.console.runs import status_of

    _running_report(tmp_path, pid=_dead_pid())
    manager = SimpleNamespace(run_dir=lambda name: tmp_path, process_state=lambda name: None)
    status, message = status_of(manager, SimpleNamespace(name="run", stopped_at=None),
                                RunReport.load(tmp_path / "report.json"))
    assert status == "failed" and message.startswith("the coordinator's ServerApp (pid")


# The ServerApp as flwr-serverapp runs it (Flower's signal handlers and parent monitor), its main thread blocked
# where a dead SuperLink leaves it: waiting for pushes that Flower retries without end (a lock, not a sleep).
# recovery.watch_parent as server_app.watch_superexec starts it (the ServerApp's own imports take seconds).
_BLOCKED_SERVERAPP = """
import os, sys, threading
from pathlib import Path
from flwr.supercore.app_utils import start_parent_process_monitor
from flwr.supercore.exit import register_signal_handlers
from flwr.supercore.telemetry import EventType
from coordinator import recovery
from coordinator.report import RoundRecord, RunReport

run_dir = Path(sys.argv[1])
RunReport(rounds=[RoundRecord(round=1, status="done", anchor_block=40),
                  RoundRecord(round=2, status="training")]).save(run_dir / "report.json")
recovery.claim(run_dir)
register_signal_handlers(event_type=EventType.FLWR_SERVERAPP_RUN_LEAVE, exit_handlers=[])
start_parent_process_monitor(os.getppid())
recovery.watch_parent(lambda cause: (recovery.end_run(run_dir / "report.json", cause), recovery.release(run_dir)))
print("ready", flush=True)
threading.Event().wait()
"""
_SUPEREXEC = """
import subprocess, sys, time
serverapp = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=sys.stdout)
print(serverapp.pid, flush=True)
time.sleep(600)
"""


def test_a_serverapp_blocked_on_a_dead_superlink_ends_its_report_when_its_superexec_dies(tmp_path):
    """The flaky fault test's cause: Flower's parent monitor raises SIGINT in its own thread, so a main thread
    blocked on a lock (pushes retried without end) never runs the handler, and the report stayed "running"."""
    import os
    import signal
    import time

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    superexec = subprocess.Popen([sys.executable, "-c", _SUPEREXEC, _BLOCKED_SERVERAPP, str(run_dir)],
                                 stdout=subprocess.PIPE, text=True, cwd=__import__("pathlib").Path(__file__).parents[2])
    serverapp_pid = int(superexec.stdout.readline())
    try:
        assert superexec.stdout.readline().strip() == "ready"
        os.kill(superexec.pid, signal.SIGKILL)  # as the SuperExec dies with its SuperLink
        superexec.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and RunReport.load(run_dir / "report.json").status == "running":
            time.sleep(0.1)
        report = RunReport.load(run_dir / "report.json")
        assert report.status == "failed", "the report still says running 5 s after the SuperExec died"
        assert report.message.startswith("the coordinator's ServerApp was stopped")
        assert "during round 2; rounds 1 stay anchored on chain" in report.message
        assert not (run_dir / recovery.OWNER_FILE).exists()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and recovery._alive(serverapp_pid):
            time.sleep(0.1)
        assert not recovery._alive(serverapp_pid), "the ServerApp outlived its SuperExec"
    finally:
        for pid in (superexec.pid, serverapp_pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        superexec.wait()


def test_a_request_the_superlink_leaves_unanswered_past_the_round_timeout_names_it_unresponsive():
    import threading
    import time

    release = threading.Event()

    class HungLink:
        def pull_messages(self, ids):
            release.wait(5)
            return []

    grid = recovery.WatchedGrid(HungLink())
    check = recovery.superlink_unresponsive(grid, timeout_s=0.2)
    assert check() is None and grid.unanswered_s() == 0.0
    caller = threading.Thread(target=grid.pull_messages, args=([],))
    caller.start()
    time.sleep(0.4)
    cause = check()
    release.set()
    caller.join()
    assert cause is not None and cause.startswith("the coordinator's ServerApp was stopped: the SuperLink is unresponsive")
    assert check() is None  # answered: nothing in flight
