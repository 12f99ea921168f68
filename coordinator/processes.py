"""The coordinator's processes: Flower's SuperLink and `flwr run` / `flwr stop`, started as subprocesses.

The one copy of the helpers the `twinledger coordinator` commands, the operator console and `deploy` (the demo,
the benchmarks) use to start a process that logs to a file, wait until it answers, and talk to the SuperLink
with Flower's `flwr` CLI. A process that dies on start-up is reported with the end of its log.

The Flower app `flwr run` submits is `FLOWER_APP_DIR` (coordinator/flower_app/pyproject.toml, package data):
a FAB of that pyproject.toml alone. Flower's `load_app` puts the unpacked FAB first on sys.path and imports
`coordinator.server_app` / `node.client_app` by name, so with no Python files in the FAB both come from the
packages installed beside Flower (flwr 1.41: flwr/supercore/object_ref.py, flwr/cli/build.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

FLOWER_APP_DIR = Path(__file__).resolve().parent / "flower_app"
VENV_BIN = Path(sys.executable).parent  # flwr, flower-superlink and flower-supernode sit beside this Python


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


def superlink_address(text: str) -> tuple[str, int]:
    """HOST:PORT of a SuperLink as given on a command line."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--superlink must be HOST:PORT, got {text!r}")
    return host, int(port)


def flower_env(flwr_home: Path, *, bin_dir: Path = VENV_BIN) -> dict[str, str]:
    """This process's environment for a Flower process: its FLWR_HOME, no telemetry, no update check."""
    env = dict(os.environ)
    env.update({"FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                "PYTHONUNBUFFERED": "1"})
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


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


def superlink_command(*, database: Path, host: str, port: int) -> list[str]:
    # Without --disable-runtime-dependency-installation, flwr 1.41 runs `uv sync` for every run and installs the
    # app's dependencies (a CUDA torch among them) into a fresh environment: the apps use this environment instead.
    return [str(VENV_BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
            "--database", str(database), "--host", host, "--port", str(port)]


def start_superlink(*, port: int, state_dir: Path, flwr_home: Path, host: str = "127.0.0.1") -> Service:
    state_dir.mkdir(parents=True, exist_ok=True)
    service = start("superlink", superlink_command(database=state_dir / "state.db", host=host, port=port),
                    log_path=state_dir / "superlink.log", env=flower_env(flwr_home), cwd=state_dir)
    wait_until(service, lambda: port_open(port, reachable_host(host).strip("[]")), timeout_s=60, what=f"port {port}")
    return service


def write_flower_federation(flwr_home: Path, *, name: str, superlink_port: int, host: str = "127.0.0.1") -> None:
    """The `flwr` CLI's connection to a SuperLink at `host`:`superlink_port`, in $FLWR_HOME/config.toml."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(f'[superlink.{name}]\naddress = "{host}:{superlink_port}"\ninsecure = true\n')


def run_config_overrides(config: dict) -> str:
    """`flwr run --run-config` text: numbers as they are, everything else quoted."""
    return " ".join(f"{k}={v}" if isinstance(v, (int, float)) else f'{k}="{v}"' for k, v in config.items())


def flwr_run_command(*, federation: str, run_config: dict, flwr: Path = VENV_BIN / "flwr",
                     app_dir: Path = FLOWER_APP_DIR) -> list[str]:
    return [str(flwr), "run", str(app_dir), federation, "--stream", "--run-config", run_config_overrides(run_config)]


def flwr_run(*, federation: str, run_config: dict, flwr_home: Path, log_path: Path,
             app_dir: Path = FLOWER_APP_DIR) -> Service:
    """Submit the Flower app to the SuperLink and stream the run's logs to `log_path`."""
    return start("flwr run", flwr_run_command(federation=federation, run_config=run_config, app_dir=app_dir),
                 log_path=log_path, env=flower_env(flwr_home), cwd=app_dir)
