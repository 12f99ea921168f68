"""`twinledger chain start`: anvil as a development chain, durable by default, optionally behind HTTPS.

deploy/cli.py adds it to the `chain` group (contracts/cli.py `add_chain_commands(add_start=...)`) with
`start_gateway`, which issues the terminator's certificate from the consortium CA and starts it (deploy/).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

REMOTE_DEV_CHAIN_REFUSED = (
    "refusing to serve the development chain on {host}: anvil unlocks its funded accounts and answers "
    "state-rewriting methods (anvil_setBalance, anvil_setCode, anvil_setStorageAt, evm_revert...) to anyone who "
    "reaches the port, so whoever can connect could forge consents, anchors and balances. Keep it on loopback, or "
    "pass --allow-remote-dev-chain on a private test network only"
)


class _Terminated(Exception):
    """SIGTERM arrived."""


def _raise_terminated(signum, frame):
    raise _Terminated


def _chain_start(args, *, start_gateway) -> int:
    from contracts.devchain.anvil import start_anvil
    from federation.processes import ProcessError

    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.allow_remote_dev_chain:
        print(f"twinledger: {REMOTE_DEV_CHAIN_REFUSED.format(host=args.host)}", file=sys.stderr)
        return 2
    if args.state_interval_s < 1:
        raise ValueError(f"--state-interval-s must be at least 1, got {args.state_interval_s}")
    state_file = None if args.ephemeral else Path(args.state)
    tls = args.tls_ca_dir is not None  # anvil then stays on loopback behind the TLS terminator
    service, url = start_anvil(port=args.port, log_path=Path(args.log), host="127.0.0.1" if tls else args.host,
                               state_file=state_file, state_interval_s=args.state_interval_s)
    gateway = None
    if tls:
        try:
            gateway, url, ca_cert = start_gateway(
                upstream=url, port=args.tls_port, ca_dir=Path(args.tls_ca_dir), host=args.host,
                tls_dir=Path(args.log).resolve().parent / "chain-tls", log_path=Path(args.log).with_name("chain-gateway.log"))
        except ProcessError:
            service.stop()
            raise
        print(f"chain TLS terminator: parties use {url} with chain-ca-file {ca_cert}", flush=True)
    listening = f" (listening on {args.host})" if args.host != "127.0.0.1" else ""
    kept = (f"; state kept in {state_file} every {args.state_interval_s} s" if state_file
            else "; in memory only (--ephemeral): a crash loses it")
    print(f"anvil serving JSON-RPC at {url}{listening} (log {args.log}){kept}; Ctrl-C or SIGTERM stops it",
          flush=True)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = service.process.wait()
    except (KeyboardInterrupt, _Terminated):
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if gateway is not None:
            gateway.stop()
        service.stop()
    print(f"twinledger: anvil exited with status {code}; its log ends:\n{service.tail()}", file=sys.stderr)
    return 1


def add_chain_start(chain, *, start_gateway) -> None:
    """`chain start` in the `chain` group; `start_gateway(upstream=, port=, ca_dir=, host=, tls_dir=, log_path=)`
    starts the TLS terminator with a certificate from the CA in `ca_dir`: (service, https URL, CA certificate)."""
    start = chain.add_parser("start", help="run anvil, a development chain; Ctrl-C or SIGTERM stops it")
    start.add_argument("--host", default="127.0.0.1",
                       help="address anvil listens on (default 127.0.0.1; another address needs "
                            "--allow-remote-dev-chain)")
    start.add_argument("--allow-remote-dev-chain", action="store_true",
                       help="serve the dev chain beyond loopback although anvil exposes unlocked accounts and "
                            "state-rewriting methods (private test networks only)")
    start.add_argument("--port", type=int, default=8545, help="JSON-RPC port (default 8545)")
    start.add_argument("--log", default="anvil.log", help="anvil's log file (default anvil.log)")
    start.add_argument("--state", default="chain-state.json",
                       help="the chain's state file: loaded on start when it exists, written every "
                            "--state-interval-s seconds and on exit (default chain-state.json)")
    start.add_argument("--state-interval-s", type=int, default=1,
                       help="seconds between state dumps: a crash loses at most about two of them (default 1)")
    start.add_argument("--ephemeral", action="store_true", help="keep the chain in memory only (lost when it stops)")
    start.add_argument("--tls-ca-dir", help="serve HTTPS: anvil on 127.0.0.1:--port behind a TLS terminator on "
                                            "--host:--tls-port whose certificate this consortium CA issues")
    start.add_argument("--tls-port", type=int, default=8443, help="the terminator's HTTPS port (default 8443)")
    start.set_defaults(func=lambda args: _chain_start(args, start_gateway=start_gateway))
