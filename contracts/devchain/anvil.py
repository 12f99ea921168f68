"""anvil, a local development chain, started as a process that logs to a file."""

from __future__ import annotations

import shutil
from pathlib import Path

import requests

from contracts.devchain import state as chain_state
from federation.processes import ProcessError, Service, reachable_host, start, wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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


def start_anvil(*, port: int, log_path: Path, chain_id: int = 31337, host: str = "127.0.0.1",
                state_file: Path | None = None, state_interval_s: int = 1,
                extra_args: tuple[str, ...] = ()) -> tuple[Service, str]:
    """A local development chain listening on `host` (loopback by default); returns the service and its JSON-RPC URL.

    With `state_file` the chain is durable: anvil starts from the file when it exists and dumps its state there
    every `state_interval_s` seconds, and a keeper (contracts/devchain/state.py) copies each complete dump aside,
    so a crash loses at most the last two intervals. Without it the chain lives in memory only. `extra_args` go to
    anvil as they are (a benchmark's gas limit, for example).
    """
    url = f"http://{reachable_host(host)}:{port}"
    command = [anvil_binary(), "--host", host, "--port", str(port), "--chain-id", str(chain_id), "--accounts", "2",
               *extra_args]
    # anvil pages old states out to a cache folder, by default ~/.foundry/anvil/tmp, where every killed anvil left
    # its folder behind (70 GB on this machine after a day of fault tests and benchmarks): keep it beside the
    # chain's log instead, emptied at each start (nothing in it outlives the process that wrote it).
    cache = Path(log_path).resolve().parent / f"{Path(log_path).stem}-states"
    shutil.rmtree(cache, ignore_errors=True)
    command += ["--cache-path", str(cache)]
    if state_file is not None:
        state_file = Path(state_file).resolve()
        state_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            chain_state.restore(state_file)
        except ValueError as exc:
            raise ProcessError(str(exc)) from exc
        command += ["--state", str(state_file), "--state-interval", str(state_interval_s)]
    service = start("anvil", command, log_path=log_path)
    wait_until(service, lambda: rpc_answers(url), timeout_s=30, what=f"JSON-RPC on {url}")
    if state_file is not None:
        chain_state.StateKeeper(state_file, interval_s=state_interval_s, alive=service.alive).start()
    return service, url
