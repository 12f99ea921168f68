"""What the ledger client reads back from the contracts, as value types."""

from __future__ import annotations

from dataclasses import dataclass

from federation.ids import Digest, Pseudonym, StudyId


def to_bytes32(text: str) -> bytes:
    """An ASCII code (purpose, task id) as a left-aligned bytes32."""
    raw = text.encode("ascii")
    if len(raw) > 32:
        raise ValueError(f"{text!r} is longer than 32 bytes")
    return raw.ljust(32, b"\0")


def from_bytes32(value: bytes) -> str:
    return bytes(value).rstrip(b"\0").decode("ascii", errors="replace")


@dataclass(frozen=True)
class StudyTerms:
    study_id: bytes
    purpose: str
    task_id: str
    data_categories: int
    epsilon_budget: float
    delta: float
    rounds: int
    ends_at: int
    suspended: bool
    app_digest: bytes = bytes(32)  # SHA-256 of the app's FAB (Flower's fab_hash); zero bytes when none is recorded
    # The fraction of epsilon_budget the study's evaluation releases may spend together (on chain in percent);
    # 0 (a study recorded before the field existed) leaves evaluation no budget: nodes refuse to evaluate it.
    evaluation_share: float = 0.0

    @property
    def app_digest_hex(self) -> str | None:
        """The app digest as Flower writes a `fab_hash` (64 hex digits, no 0x), None when none is recorded."""
        return self.app_digest.hex() if any(self.app_digest) else None


@dataclass(frozen=True)
class RoundAnchor:
    study_id: StudyId
    round: int
    pinned_block: int
    model_hash: Digest
    commitments: dict[str, Digest]  # hospital account -> commitment
    anchored_block: int


@dataclass(frozen=True)
class NodeKeyEvent:
    """A change an admission syncer acts on: a hospital's node key set (`kind` "node-key", with the key and its
    fingerprint), or a hospital suspended or reinstated (`kind` "suspended" / "reinstated")."""

    kind: str
    account: str
    block: int
    node_key: bytes | None = None
    node_id: Digest | None = None


@dataclass(frozen=True)
class ConsentChange:
    pseudonym: Pseudonym
    study_id: bytes
    granted: bool
    block: int
