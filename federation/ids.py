"""Value types for the 32-byte identifiers of the domain, written everywhere as 0x and 64 hex digits.

A `StudyId` names a study (a data-use agreement) on chain; a `Pseudonym` is a patient's random on-chain
name; a `Digest` is a keccak-256 hash (a commitment, a model hash). Each is `bytes` (so web3 and eth_abi take
it as a bytes32) that prints as `0x...` and parses from that form, so no caller converts by hand.
"""

from __future__ import annotations

import secrets
from typing import Any


class Bytes32(bytes):
    """32 bytes; `str()` gives 0x and 64 hex digits, `parse()` reads that form back (with or without 0x)."""

    kind = "32-byte value"

    def __new__(cls, value: bytes | bytearray | memoryview | str):
        if isinstance(value, str):
            return cls.parse(value)
        raw = bytes(value)
        if len(raw) != 32:
            raise ValueError(f"a {cls.kind} has 32 bytes, got {len(raw)}")
        return super().__new__(cls, raw)

    @classmethod
    def parse(cls, text: Any):
        """Read 0x and 64 hex digits (the 0x may be left out); ValueError naming the kind otherwise."""
        digits = str(text).strip().removeprefix("0x").removeprefix("0X")
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"a {cls.kind} is 32 bytes written as 0x and 64 hex digits, got {str(text)[:80]!r}")
        return super().__new__(cls, raw)

    @classmethod
    def new(cls):
        """A fresh random value from the operating system's secure generator."""
        return super().__new__(cls, secrets.token_bytes(32))

    @property
    def hex0x(self) -> str:
        return "0x" + self.hex()

    def __str__(self) -> str:
        return self.hex0x

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hex0x!r})"

    def short(self, digits: int = 8) -> str:
        """0x and the first digits, for logs and pages where the whole value is noise."""
        return "0x" + self.hex()[:digits] + "…"


class StudyId(Bytes32):
    kind = "study id"


class Pseudonym(Bytes32):
    """A patient's on-chain name: random, carries nothing about the patient."""

    kind = "pseudonym"


class Digest(Bytes32):
    """A keccak-256 digest: a commitment to a set of pseudonyms, or a model hash."""

    kind = "digest"


def hex0x(value: bytes) -> str:
    """Any bytes as 0x and hex digits (transaction hashes, signatures)."""
    return "0x" + bytes(value).hex()


def from_hex0x(text: str) -> bytes:
    """0x and hex digits (any even length) as bytes; ValueError otherwise."""
    digits = str(text).removeprefix("0x")
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise ValueError(f"expected 0x and hex digits, got {str(text)[:80]!r}") from None
