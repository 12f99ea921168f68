"""Account keys on disk, and funding a fresh account on a development chain."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from eth_utils import to_checksum_address
from web3 import Web3
from web3.exceptions import Web3RPCError

from contracts.keystore import ROLES, KeystoreError, is_keystore, load_key_file
from contracts.ledger.errors import LedgerError
from federation.ids import hex0x

log = logging.getLogger(__name__)
_warned_plaintext: set[Path] = set()
_ROLE_OF_FILE_NAME = {f"{role}.key": role for role in ROLES}


def load_key(path: Path, *, role: str | None = None) -> str:
    """The private key in `path` as 0x hex: an encrypted keystore (standard Ethereum keystore JSON), decrypted
    with the passphrase of `role` from a file or the environment (contracts/keystore.py names the variables),
    or a plaintext hex file, still read but warned about. Any problem, a wrong passphrase included, is a
    LedgerError that says what to do. `role` defaults to the one the file's conventional name says
    (hospital.key, coordinator.key, operator.key); a key of no known role reads only the shared variables."""
    path = Path(path)
    role = role or _ROLE_OF_FILE_NAME.get(path.name)
    try:
        key = load_key_file(path, role=role)
        if not is_keystore(path) and path.resolve() not in _warned_plaintext:
            _warned_plaintext.add(path.resolve())
            log.warning("the key file %s holds a plaintext key: encrypt it with 'twinledger chain encrypt-key %s' "
                        "(docs/ledger.md, Keys)", path, path)
        return key
    except KeystoreError as exc:
        raise LedgerError(str(exc)) from None


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
