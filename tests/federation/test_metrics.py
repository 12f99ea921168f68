"""The metrics of processes that serve no HTTP (the SuperNode's ClientApps, the ServerApp) reach a web app's
/metrics through prometheus-client's multiprocess mode (federation/monitoring.py, docs/operations.md)."""

from __future__ import annotations

import os
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from federation import monitoring

# What a SuperNode and a ServerApp do in a round, in two processes of their own, one after the other, that share
# the directory (forked: the imports are paid once).
ROUNDS_IN_TWO_OTHER_PROCESSES = """
import os, time
from federation import monitoring, protocol
for _ in range(2):
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        continue
    monitoring.refused(4003)
    monitoring.refused(4003)
    monitoring.epsilon_spent("0x" + "ab" * 32, 0.75)
    monitoring.epsilon_spent("0x" + "ab" * 32, 1.25)
    monitoring.epsilon_spent("0x" + "cd" * 32, float("inf"))
    with monitoring.consent_read():
        time.sleep(0.02)
    monitoring.round_ended(completed=True)
    monitoring.round_ended(completed=False)
    os._exit(0)
"""


def samples(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_web_app_exposes_what_other_processes_of_its_side_recorded(tmp_path, monkeypatch):
    shared = tmp_path / "metrics"
    # Counters add up over the processes, the gauge keeps the latest value.
    subprocess.run([sys.executable, "-c", ROUNDS_IN_TWO_OTHER_PROCESSES], check=True, timeout=60,
                   env={**_environment(), "PROMETHEUS_MULTIPROC_DIR": str(shared)})
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    body, content_type = monitoring.exposition()
    assert content_type.startswith("text/plain")
    found = samples(body.decode())
    assert found[("twinledger_refusals_total", (("code", "4003"), ("name", "consent unclear")))] == 4
    assert found[("twinledger_epsilon_spent", (("study", "0x" + "ab" * 32),))] == 1.25
    assert not any(name == "twinledger_epsilon_spent" and ("study", "0x" + "cd" * 32) in labels
                   for name, labels in found)  # a non-private study's infinite epsilon is left out
    assert found[("twinledger_consent_read_seconds_count", ())] == 2
    assert found[("twinledger_consent_read_seconds_sum", ())] >= 0.04
    assert found[("twinledger_rounds_total", (("outcome", "completed"),))] == 2
    assert found[("twinledger_rounds_total", (("outcome", "failed"),))] == 2


def _environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != "PROMETHEUS_MULTIPROC_DIR"}
