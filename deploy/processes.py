"""Start the long-running parts as real processes: anvil, the Flower SuperLink and the hospitals' SuperNodes.

The process machinery and the SuperLink side are the coordinator's (coordinator/processes.py, re-exported here
for the demo, the benchmarks and the tests); the SuperNode launcher is the node's (node/supernode.py). This
module adds what only a whole deployment on one machine needs: a development chain, and SuperNodes started
as processes of this machine.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import requests

from coordinator.processes import (  # noqa: F401 - re-exported: the demo, the benchmarks and the tests use them
    FLOWER_APP_DIR,
    VENV_BIN,
    ProcessError,
    Service,
    flower_env,
    flwr_run,
    free_port,
    port_open,
    reachable_host,
    start,
    start_superlink,
    wait_until,
    write_flower_federation,
)
from node import supernode

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


def start_anvil(*, port: int, log_path: Path, chain_id: int = 31337, host: str = "127.0.0.1") -> tuple[Service, str]:
    """A local development chain listening on `host` (loopback by default); returns the service and its JSON-RPC URL."""
    url = f"http://{reachable_host(host)}:{port}"
    service = start(
        "anvil",
        [anvil_binary(), "--host", host, "--port", str(port), "--chain-id", str(chain_id), "--accounts", "2"],
        log_path=log_path,
    )
    wait_until(service, lambda: rpc_answers(url), timeout_s=30, what=f"JSON-RPC on {url}")
    return service, url


def supernode_command(*, warm: bool = True) -> list[str]:
    """Flower's SuperNode; `warm`: with warm ClientApp processes and a short idle poll (node/supernode.py)."""
    return supernode.command(warm=warm)


def start_supernode(
    *, name: str, superlink_port: int, port: int, node_home: Path, flwr_home: Path, log_path: Path,
    warm: bool | None = None,
) -> Service:
    """A hospital's SuperNode; `warm` None: as TWINLEDGER_WARM_SUPERNODE says (default warm, "0": stock Flower)."""
    if warm is None:
        warm = os.environ.get("TWINLEDGER_WARM_SUPERNODE", "1") != "0"
    service = start(
        f"supernode {name}",
        [*supernode.command(warm=warm), "--insecure", "--superlink", f"127.0.0.1:{superlink_port}",
         "--port", str(port), "--node-config", f'node-home="{node_home}"'],
        log_path=log_path,
        env=supernode.environment(flwr_home),
        cwd=node_home,
    )
    wait_until(service, lambda: port_open(port), timeout_s=60, what=f"port {port}")
    return service
