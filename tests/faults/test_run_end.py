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
from coordinator.cli import _check_report
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
