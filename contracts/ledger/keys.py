"""Account keys on disk, and funding a fresh account on a development chain."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from eth_utils import to_checksum_address
from web3 import Web3
from web3.exceptions import Web3RPCError

from contracts.ledger.errors import LedgerError
from federation.ids import hex0x


def load_key(path: Path) -> str:
    """Read a hex private key file (created with owner-only permissions)."""
    try:
        return Path(path).read_text().strip()
    except FileNotFoundError as exc:
        raise LedgerError(f"no key file at {path}") from exc


def write_key(path: Path, key_hex: str | None = None) -> str:
    """Create a key file readable by its owner only; returns the key."""
    key_hex = key_hex or hex0x(secrets.token_bytes(32))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key_hex + "\n")
    return key_hex


def fund_from_dev_account(w3: Web3, address: str, *, ether: int = 100) -> None:
    """Fund a fresh account from the dev chain's first unlocked account (anvil, eth-tester)."""
    try:
        source = w3.eth.accounts[0]
        tx = w3.eth.send_transaction({"from": source, "to": to_checksum_address(address), "value": w3.to_wei(ether, "ether")})
        w3.eth.wait_for_transaction_receipt(tx, timeout=60)
    except (IndexError, Web3RPCError) as exc:
        raise LedgerError("this chain has no unlocked dev account to fund from; fund the account yourself") from exc
