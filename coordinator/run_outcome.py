"""How `twinledger coordinator run` learns how its run ended: the run's report, made final if the ServerApp
could not (coordinator/recovery.py), and `flwr run` stopped when it streams on after the report is final."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

# `flwr run --stream` waits on the SuperLink: when that hangs, the ServerApp's watch thread ends the report but
# the stream never ends. Once the report has been final this long, `flwr run` is stopped.
LINGER_AFTER_FINAL_S = 30.0


def report_of(runs_dir: Path, run_name: str, *, started: float) -> Path | None:
    """This run's report: the named one, else the newest (the ServerApp names the run after Flower's run id)."""
    if run_name:
        candidates = [runs_dir / run_name / "report.json"]
    else:
        candidates = sorted(runs_dir.glob("*/report.json"), key=lambda p: p.stat().st_mtime, reverse=True)[:1]
    return next((p for p in candidates if p.exists() and p.stat().st_mtime >= started - 1), None)


def _status(report_path: Path | None) -> str | None:
    try:
        return json.loads(report_path.read_text()).get("status") if report_path else None
    except (OSError, ValueError):
        return None  # being written: read again at the next look


def wait_for_flwr_run(process: subprocess.Popen, runs_dir: Path, run_name: str, *, started: float,
                      poll_s: float = 1.0, linger_s: float = LINGER_AFTER_FINAL_S) -> int:
    """flwr run's exit status; if it outlives its run's final report by `linger_s`, it is stopped."""
    final_since = None
    while process.poll() is None:
        status = _status(report_of(runs_dir, run_name, started=started))
        if status in (None, "running"):
            final_since = None
        elif final_since is None:
            final_since = time.monotonic()
        elif time.monotonic() - final_since > linger_s:
            print(f"twinledger: the run's report has been {status} for {linger_s:.0f} s while flwr run still "
                  "streams (a SuperLink that answers nothing): stopping flwr run", file=sys.stderr, flush=True)
            process.terminate()
            try:
                return process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                return process.wait()
        time.sleep(poll_s)
    return process.returncode


def check_report(runs_dir: Path, run_name: str, *, started: float, log: str, flwr_code: int) -> int:
    """Print the run report's path and outcome; 0 only if this run's report says `finished`."""
    report_path = report_of(runs_dir, run_name, started=started)
    if report_path is None:
        print(f"twinledger: the run wrote no report (flwr run exited with status {flwr_code}); see {log}",
              file=sys.stderr)
        return flwr_code or 1
    report = final_report(report_path, flwr_code=flwr_code)
    status = report.get("status")
    if status != "finished":
        reason = report.get("message") or "the report gives no reason"
        label = "still running" if status == "running" else status
        print(f"twinledger: the run is {label}: {reason}; see {log}", file=sys.stderr)
        print(f"Report: {report_path}")
        return 1
    rounds = report.get("rounds", [])
    anchored = sum(1 for r in rounds if r.get("anchor_block") is not None)
    print(f"run finished: {len(rounds)} round(s), {anchored} anchored")
    print(f"Report: {report_path}")
    return 0


def final_report(report_path: Path, *, flwr_code: int, wait_s: float = 15.0) -> dict:
    """The report once it is final. `flwr run` returns when its stream ends, also when the SuperLink stopped:
    the ServerApp then ends the run itself (coordinator/recovery.py) within moments, or, if it was killed, the
    run is ended here."""
    from coordinator import recovery

    deadline = time.monotonic() + wait_s
    while True:
        report = recovery.end_abandoned(report_path.parent)
        if report is None or report.status != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if report is None:
        return json.loads(report_path.read_text())
    data = report.as_dict()
    if report.status == "running":
        claimed = recovery.owner(report_path.parent)
        where = f"in the ServerApp (pid {claimed[0]}) on the SuperLink's machine" if claimed else "on the SuperLink"
        data["message"] = (f"flwr run ended (status {flwr_code}) while the run goes on {where}: its report is "
                           "updated after every round")
    return data
