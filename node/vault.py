"""Clinical data at rest: AES-256-GCM with a per-node key file that only its owner can read."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class VaultError(Exception):
    """A record could not be decrypted, or the key file is missing or unsafe."""


def create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(AESGCM.generate_key(bit_length=256))


class Vault:
    def __init__(self, key: bytes):
        if len(key) != 32:
            raise VaultError("the data key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    @classmethod
    def open(cls, path: Path) -> "Vault":
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            raise VaultError(f"no data key at {path}: run 'twinledger node init' first") from None
        if mode & 0o077:
            raise VaultError(f"the data key {path} is readable by others (mode {mode:o}); chmod 600 it")
        return cls(path.read_bytes())

    def seal(self, record: dict, *, associated: str) -> bytes:
        """Encrypt a record; `associated` (the patient's pseudonym) binds the ciphertext to its row."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, json.dumps(record).encode(), associated.encode())

    def open_record(self, sealed: bytes, *, associated: str) -> dict:
        try:
            plain = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated.encode())
        except (InvalidTag, ValueError):
            raise VaultError(f"the record of {associated[:10]}… cannot be decrypted: wrong key or tampered data") from None
        return json.loads(plain)
