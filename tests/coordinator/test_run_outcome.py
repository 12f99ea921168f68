"""`twinledger coordinator run` stops a `flwr run` that streams on after its run's report is final (a hung
SuperLink never ends the stream; the ServerApp's watch thread ends the report, coordinator/recovery.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from coordinator.run_outcome import wait_for_flwr_run


def _report(runs_dir, status: str) -> None:
    (runs_dir / "run").mkdir(parents=True, exist_ok=True)
    (runs_dir / "run" / "report.json").write_text(json.dumps({"status": status, "message": "why"}))


def test_a_stream_outliving_its_final_report_is_stopped(tmp_path, capsys):
    started = time.time()
    _report(tmp_path, "failed")
    stream = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        code = wait_for_flwr_run(stream, tmp_path, "run", started=started, poll_s=0.05, linger_s=0.3)
    finally:
        stream.kill()
    assert code != 0 and stream.poll() is not None
    assert "stopping flwr run" in capsys.readouterr().err


def test_a_running_report_leaves_the_stream_alone(tmp_path):
    started = time.time()
    _report(tmp_path, "running")
    stream = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
    assert wait_for_flwr_run(stream, tmp_path, "run", started=started, poll_s=0.05, linger_s=0.1) == 0
