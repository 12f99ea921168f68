"""Rotating a hospital's chain key (`twinledger node rotate-hospital-key`).

The hospital's identity on chain is the address the operator registered; the key that acts for it (its signer)
can change (`Consortium.rotateHospitalKey`). A rotation writes the new key beside the old one
(`keys/hospital.key.new`, in the old one's form: a keystore under the same role's passphrase, or plaintext hex),
has the old key hand the hospital to it, moves the old account's ether to it for gas, records the hospital's
registration address in `keys/hospital.account` (what the usage export and the IT console name the hospital by,
without the chain) and only then moves the new key over `keys/hospital.key`. A rotation cut short is finished by
running the command again: a pending key the chain already names as the signer is moved into place.
"""

from __future__ import annotations

from pathlib import Path

from eth_account import Account

from contracts import keystore
from contracts.ledger import Ledger, LedgerError, load_key

ACCOUNT_FILE = "hospital.account"


def account_file(key_file: Path) -> Path:
    return key_file.with_name(ACCOUNT_FILE)


def recorded_hospital_account(key_file: Path) -> str | None:
    """The hospital's registration address, once its key rotated; None before."""
    path = account_file(key_file)
    return path.read_text().strip() if path.exists() else None


def _new_key_file(current: Path, pending: Path) -> str:
    """A new key at `pending` in `current`'s form; returns its address."""
    pending.unlink(missing_ok=True)
    key = keystore.create_key_file(pending, role="hospital", plaintext=not keystore.is_keystore(current))
    return Account.from_key(key).address


def rotate_hospital_key(ledger: Ledger, key_file: Path) -> str:
    """Hand the hospital `ledger` acts for to a new key written at `key_file` (see the module's docstring).
    Returns the new signer's address. Requires `ledger` opened with `key_file`'s key, a hospital's signer."""
    pending = key_file.with_name(key_file.name + ".new")
    hospital = recorded_hospital_account(key_file) or ledger.address
    pending_signer = Account.from_key(load_key(pending, role="hospital")).address if pending.exists() else None
    if pending_signer is not None and ledger.signer_of(hospital) == pending_signer:
        new_signer = pending_signer  # cut short after the chain recorded it: finish
    else:
        if ledger.hospital_of(ledger.signer) != hospital:
            raise LedgerError(f"{key_file} holds the key of {ledger.signer}, which does not act for hospital "
                              f"{hospital}: nothing to rotate (the operator names a new signer for a lost key: "
                              "twinledger consortium set-hospital-signer)")
        new_signer = _new_key_file(key_file, pending)
        if not account_file(key_file).exists():  # before the chain changes: a rerun must know the hospital
            account_file(key_file).write_text(hospital + "\n")
        ledger.rotate_hospital_key(new_signer)
        ledger.send_balance(new_signer)
    pending.replace(key_file)
    return new_signer
