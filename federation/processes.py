"""Start a process that logs to a file and wait until it answers: the helpers both sides and deploy/ share.

The coordinator's processes (coordinator/processes.py: the SuperLink, `flwr`), the development chain's
(contracts/devchain/: anvil, its TLS terminator) and deploy/'s (the SuperNodes) all use them. A process that
dies on start-up is reported with the end of its log.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class ProcessError(RuntimeError):
    """A part did not start, or stopped unexpectedly."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", *, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def reachable_host(host: str) -> str:
    """Where this machine reaches a service bound to `host`: loopback for the wildcard addresses."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log_path: Path

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self.alive():
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=timeout_s)


def start(name: str, command: list[str], *, log_path: Path, env: dict | None = None, cwd: Path | None = None) -> Service:
    """`command` in a session of its own (stopping it stops its children), stdout and stderr to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                   start_new_session=True)
    return Service(name, process, log_path)


def wait_until(service: Service, ready, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not service.alive():
            raise ProcessError(f"{service.name} exited while starting ({what}); its log ends:\n{service.tail()}")
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(0.25)
    service.stop()
    raise ProcessError(f"{service.name} did not become ready within {timeout_s:g} s ({what}); its log ends:\n{service.tail()}")


def https_answers(address: str, ca_cert: Path, *, path: str = "/health", timeout_s: float = 2.0) -> bool:
    """Whether `https://address/path` answers 200 over TLS verified against `ca_cert` (the name checked too)."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    try:
        with urllib.request.urlopen(f"https://{address}{path}", context=context, timeout=timeout_s) as answer:
            return answer.status == 200
    except OSError:
        return False
