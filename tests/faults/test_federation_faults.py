"""Faults of issue 15 on the real processes: anvil, a SuperLink with TLS and node authentication, two hospitals'
warm SuperNodes, `flwr run` (tests/faults/federation.py; one federation for the module, each test a study of
its own). A SuperNode killed and restarted rejoins; a hung SuperNode (SIGSTOP) holds no round past its timeout;
a SuperLink killed mid-run leaves a final report saying why, never "running"."""

from __future__ import annotations

import os
import signal

import pytest

from coordinator.cli import _check_report
from coordinator.settings import CoordinatorSettings
from tests.faults.federation import Federation

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]
ROUND_TIMEOUT_S = 20.0
ANCHOR_SLACK_S = 6.0  # a round's wall time past its timeout: the anchor transaction and the report


@pytest.fixture(scope="module")
def federation(tmp_path_factory, anvil_url):
    federation = Federation.start(tmp_path_factory.mktemp("federation"), anvil_url)
    settings = CoordinatorSettings.load(federation.coordinator_home)
    settings.replace(round_timeout_s=ROUND_TIMEOUT_S).save()
    yield federation
    federation.stop()


def _done(rounds: int):
    return lambda report: len(report.rounds) >= rounds and report.rounds[rounds - 1].status == "done"


def test_a_hung_supernode_holds_no_round_past_its_timeout_and_a_killed_one_rejoins_when_restarted(federation):
    # Six rounds: the SuperLink frees a killed node's session only after about 20 s (node/supernode.py's
    # heartbeat), and with one evaluation per run the rounds after the hung one take a few seconds each.
    study = federation.open_study(rounds=6)
    federation.run(study, "nodes", **{"num-rounds": 6, "min-nodes": 1})
    federation.wait_for("nodes", _done(1), timeout_s=120)
    federation.signal_supernode("cleveland", signal.SIGSTOP)  # hung: alive, answering nothing
    hungary = federation.supernodes["hungary"]
    os.kill(hungary.process.pid, signal.SIGKILL)  # the SuperNode alone, as a crash would
    hungary.process.wait(timeout=10)
    federation.start_supernode("hungary")  # the same node key: the same hospital
    try:
        federation.wait_for("nodes", _done(2), timeout_s=120)
    finally:
        federation.signal_supernode("cleveland", signal.SIGCONT)
    report = federation.wait_for("nodes", lambda r: r.status != "running", timeout_s=240)
    assert report.status == "finished", report.message
    assert [h.name for h in report.hospitals] == ["cleveland", "hungary"]  # one entry each
    hung = report.rounds[1]
    assert hung.used == {} and {"cleveland", "hungary"} <= set(hung.errors), hung.errors
    assert hung.seconds <= ROUND_TIMEOUT_S + ANCHOR_SLACK_S, hung.seconds
    later = report.rounds[2:]
    assert any("cleveland" in r.used for r in later) and any("hungary" in r.used for r in later), \
        [(r.round, r.used, r.errors) for r in later]
    assert all("node " not in name for r in report.rounds for name in r.errors)  # hospitals, never node ids
    audit = federation.audit(study, "nodes")  # every use, the hung and the restarted node's too, checked
    assert audit.violations == 0 and audit.checked > 0, audit.as_dict()


def test_a_superlink_killed_mid_run_leaves_a_final_report_saying_why(federation, capsys):
    study = federation.open_study(rounds=3)
    run = federation.run(study, "link", **{"num-rounds": 3, "min-nodes": 1})
    federation.wait_for("link", _done(1), timeout_s=120)
    os.kill(federation.superlink.process.pid, signal.SIGKILL)  # the SuperLink alone, as the OOM killer would
    federation.superlink.process.wait(timeout=10)
    report = federation.wait_for("link", lambda r: r.status != "running", timeout_s=60)
    assert report.status == "failed"
    assert report.message.startswith("the coordinator's ServerApp was stopped")
    assert "stay anchored on chain" in report.message and "does not resume" in report.message
    run.process.wait(timeout=60)
    runs_dir = federation.coordinator_home / "runs"
    assert _check_report(runs_dir, "link", started=0, log="flwr-run.log", flwr_code=run.process.returncode) == 1
    err = capsys.readouterr().err
    assert "(no message)" not in err and "the run is failed: the coordinator's ServerApp was stopped" in err
    audit = federation.audit(study, "link")  # the cut round's uses too (unanchored), each checked for consent
    assert audit.violations == 0 and audit.checked > 0, audit.as_dict()
