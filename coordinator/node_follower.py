"""The SuperLink's node allowlist, following the chain: admitted keys are exactly the active hospitals' node keys.

    python -m coordinator.node_follower --home coordinator-home --control 127.0.0.1:9093 --ca-cert ca/ca.pem

Each hospital records its SuperNode's key on chain (`Consortium.setNodeKey`); the operator suspends a hospital
there too. Every `--poll-s` seconds this reads the chain at its latest block — which accounts ever recorded a
node key (`NodeKeySet` events, read incrementally), and of those the active hospitals' current keys — and makes
the SuperLink's admitted keys exactly those (`coordinator.admission.sync` over the loopback Control API): a key
recorded on chain is admitted within a poll, a suspended hospital's or a replaced key is unregistered (its
SuperNode is refused at its next request), and keys anybody registered by hand are removed. Nobody touches a
node home. A chain or SuperLink that does not answer is logged and retried; the list is left as it was.

`coordinator.processes.start_superlink(follow_home=...)` runs this beside the SuperLink (the demo does);
`twinledger coordinator nodes follow` runs it in the foreground.
"""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path
from typing import Protocol

from coordinator import admission
from federation.logs import setup_logging

log = logging.getLogger("twinledger.node_follower")


class NodeKeyLedger(Protocol):
    """The ledger reads the follower needs (contracts.ledger.Ledger has them)."""

    def block_number(self) -> int: ...
    def node_key_events(self, *, from_block: int | None = None, to_block: int | str = "latest") -> list: ...
    def is_active_hospital(self, account: str, *, block: int | str = "latest") -> bool: ...
    def node_key_of(self, account: str, *, block: int | str = "latest") -> bytes | None: ...


class NodeFollower:
    """Keeps one SuperLink's admitted keys equal to the chain's active hospitals' node keys."""

    def __init__(self, ledger: NodeKeyLedger, admin: admission.LinkAdmin) -> None:
        self.ledger, self.admin = ledger, admin
        self.accounts: set[str] = set()  # every account that ever recorded a node key
        self._next_block: int | None = None  # None: read the events from the deployment's first block

    def wanted(self, block: int) -> dict[str, bytes]:
        """Active hospital account -> its node key (65-byte P-256 point), as of `block`."""
        events = self.ledger.node_key_events(from_block=self._next_block, to_block=block)
        self.accounts |= {event.account for event in events if event.kind == "node-key"}
        self._next_block = block + 1
        return {account: key for account in sorted(self.accounts)
                if self.ledger.is_active_hospital(account, block=block)
                and (key := self.ledger.node_key_of(account, block=block))}

    def step(self) -> admission.SyncReport:
        """One sync at the chain's latest block; logs what changed."""
        block = self.ledger.block_number()
        wanted = self.wanted(block)
        report = admission.sync(self.admin, wanted)
        if report.registered or report.unregistered:
            log.info("block %d: admitted %s; unregistered node ids %s; %d hospital(s) admitted in all", block,
                     report.registered or "{}", report.unregistered, len(wanted))
        return report

    def run(self, stop: threading.Event, *, poll_s: float = 2.0, synced_file: Path | None = None) -> None:
        """`step` every `poll_s` seconds until `stop` is set; touches `synced_file` after each successful sync."""
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - chain or SuperLink briefly away: keep the list, retry
                log.warning("node keys not synced (retrying in %g s): %s", poll_s, exc)
            else:
                if synced_file is not None:
                    synced_file.touch()
            stop.wait(poll_s)


def follower_command(*, home: Path, control: str, ca_cert: Path, poll_s: float = 2.0,
                     synced_file: Path | None = None) -> list[str]:
    """This module as a process (what `start_superlink(follow_home=...)` starts)."""
    import sys

    command = [sys.executable, "-m", "coordinator.node_follower", "--home", str(home), "--control", control,
               "--ca-cert", str(ca_cert), "--poll-s", str(poll_s)]
    return command + (["--synced-file", str(synced_file)] if synced_file else [])


def follow(*, home: Path, control: str, ca_cert: Path, poll_s: float = 2.0, synced_file: Path | None = None,
           stop: threading.Event | None = None) -> None:
    """Follow the chain named by the coordinator home's settings (read-only) into the SuperLink at `control`."""
    from contracts.ledger import Ledger, LedgerError
    from coordinator.settings import CoordinatorSettings

    settings = CoordinatorSettings.load(home)
    stop = stop or threading.Event()
    while True:  # the chain may start after the SuperLink
        try:
            ledger = Ledger.from_settings(settings)
            break
        except LedgerError as exc:
            log.warning("the chain cannot be read yet (retrying in %g s): %s", poll_s, exc)
            if stop.wait(poll_s):
                return
    admin = admission.ControlAdmin(control, ca_cert)
    log.info("following the chain's node keys into the SuperLink at %s every %g s", control, poll_s)
    try:
        NodeFollower(ledger, admin).run(stop, poll_s=poll_s, synced_file=synced_file)
    finally:
        admin.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="the coordinator's home (its chain settings)")
    parser.add_argument("--control", required=True, help="the SuperLink's loopback Control API, host:port")
    parser.add_argument("--ca-cert", type=Path, required=True, help="the CA certificate the SuperLink's chains to")
    parser.add_argument("--poll-s", type=float, default=2.0, help="seconds between syncs (default 2)")
    parser.add_argument("--synced-file", type=Path, help="touched after every successful sync (readiness)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        follow(home=args.home, control=args.control, ca_cert=args.ca_cert, poll_s=args.poll_s,
               synced_file=args.synced_file)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
