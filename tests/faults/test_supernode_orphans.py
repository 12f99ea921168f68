"""Fault: a hospital's warm SuperNode killed outright (SIGKILL: a crash, the OOM killer) left its fork server
orphaned (issue 15). Its fork server and ClientApps now die with it (node/supernode.py, PR_SET_PDEATHSIG)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from federation.processes import free_port, start
from node import supernode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _group(pgid: int) -> list[tuple[int, str]]:
    """The live processes of process group `pgid`, with their command lines."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_supernode_killed_outright_leaves_no_fork_server_behind(tmp_path):
    # No SuperLink needed: the warm SuperNode starts its fork server while it tries to connect.
    node = start("supernode", [*supernode.command(warm=True), "--insecure", "--superlink", f"127.0.0.1:{free_port()}",
                               "--port", str(free_port()), "--node-config", f'node-home="{tmp_path}"'],
                 log_path=tmp_path / "supernode.log", env=supernode.environment(tmp_path / "flower"), cwd=tmp_path)
    pgid = node.process.pid
    try:
        deadline = time.monotonic() + 60
        while not any("forkserver" in cmd for _, cmd in _group(pgid)):
            assert time.monotonic() < deadline and node.alive(), node.tail()
            time.sleep(0.2)
        os.kill(node.process.pid, signal.SIGKILL)  # the SuperNode alone, as a crash would
        node.process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _group(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _group(pgid) == []
    finally:
        for pid, _ in _group(pgid):
            os.kill(pid, signal.SIGKILL)
