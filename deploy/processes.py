"""Start and stop the long-running parts as real processes: anvil, the Flower SuperLink and SuperNodes.

Each process logs to a file; a process that dies on start-up is reported with the end of its log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


class ProcessError(RuntimeError):
    """A part did not start, or stopped unexpectedly."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flower_env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
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
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_path, "ab")
    process = subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
    )
    handle.close()
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


def anvil_binary() -> str:
    local = PROJECT_ROOT / "node_modules" / ".bin" / "anvil"
    if local.exists():
        return str(local)
    found = shutil.which("anvil")
    if not found:
        raise ProcessError("anvil is not installed: run 'npm ci' in the project (package @foundry-rs/anvil-linux-amd64)")
    return found


def rpc_answers(url: str) -> bool:
    reply = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=2)
    return reply.ok and "result" in reply.json()


def _reachable_host(host: str) -> str:
    """Where this machine reaches a service bound to `host`: loopback for the wildcard addresses."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def start_anvil(*, port: int, log_path: Path, chain_id: int = 31337, host: str = "127.0.0.1") -> tuple[Service, str]:
    """A local development chain listening on `host` (loopback by default); returns the service and its JSON-RPC URL."""
    url = f"http://{_reachable_host(host)}:{port}"
    service = start(
        "anvil",
        [anvil_binary(), "--host", host, "--port", str(port), "--chain-id", str(chain_id), "--accounts", "2"],
        log_path=log_path,
    )
    wait_until(service, lambda: rpc_answers(url), timeout_s=30, what=f"JSON-RPC on {url}")
    return service, url


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_superlink(*, port: int, state_dir: Path, flwr_home: Path, host: str = "127.0.0.1") -> Service:
    state_dir.mkdir(parents=True, exist_ok=True)
    service = start(
        "superlink",
        # Without the flag, flwr 1.41 runs `uv sync` for every run and installs the app's dependencies
        # (a CUDA torch among them) into a fresh environment: the apps use this project's venv instead.
        [str(VENV_BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
         "--database", str(state_dir / "state.db"), "--host", host, "--port", str(port)],
        log_path=state_dir / "superlink.log",
        env=flower_env(flwr_home),
        cwd=state_dir,
    )
    wait_until(service, lambda: _port_open(port, _reachable_host(host).strip("[]")), timeout_s=60, what=f"port {port}")
    return service


def supernode_command(*, warm: bool = True) -> list[str]:
    """Flower's SuperNode; `warm`: with warm ClientApp processes and a short idle poll (deploy/supernode.py)."""
    # -c rather than -m: the fork server then has no __main__ module to re-run in every ClientApp process.
    if warm:
        return [sys.executable, "-c", "from deploy.supernode import main; main()"]
    return [str(VENV_BIN / "flower-supernode")]


def start_supernode(
    *, name: str, superlink_port: int, port: int, node_home: Path, flwr_home: Path, log_path: Path,
    warm: bool | None = None,
) -> Service:
    """A hospital's SuperNode; `warm` None: as TWINLEDGER_WARM_SUPERNODE says (default warm, "0": stock Flower)."""
    if warm is None:
        warm = os.environ.get("TWINLEDGER_WARM_SUPERNODE", "1") != "0"
    service = start(
        f"supernode {name}",
        [
            *supernode_command(warm=warm),
            "--insecure",
            "--superlink", f"127.0.0.1:{superlink_port}",
            "--port", str(port),
            "--node-config", f'node-home="{node_home}"',
        ],
        log_path=log_path,
        env=flower_env(flwr_home),
        cwd=node_home,
    )
    wait_until(service, lambda: _port_open(port), timeout_s=60, what=f"port {port}")
    return service


def write_flower_federation(flwr_home: Path, *, name: str, superlink_port: int, host: str = "127.0.0.1") -> None:
    """The `flwr` CLI's connection to a SuperLink at `host`:`superlink_port`, in $FLWR_HOME/config.toml."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink.{name}]\naddress = "{host}:{superlink_port}"\ninsecure = true\n'
    )


def flwr_run(
    *, federation: str, run_config: dict, flwr_home: Path, log_path: Path, app_dir: Path = PROJECT_ROOT
) -> Service:
    """Submit the app to the SuperLink and stream its logs to `log_path`."""
    overrides = " ".join(
        f"{key}={value}" if isinstance(value, (int, float)) else f'{key}="{value}"' for key, value in run_config.items()
    )
    return start(
        "flwr run",
        [str(VENV_BIN / "flwr"), "run", str(app_dir), federation, "--stream", "--run-config", overrides],
        log_path=log_path,
        env=flower_env(flwr_home),
        cwd=app_dir,
    )
