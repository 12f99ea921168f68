"""The commitment scheme both sides and the auditor use, in one place.

A node commits to the set of pseudonyms it used in one phase of a round (training or evaluation) with
keccak-256 over the sorted, concatenated pseudonyms; the round anchor holds, per hospital, keccak-256 of
the training commitment followed by the evaluation commitment (a phase not completed counts as empty
bytes). The model hash is keccak-256 over the model's tensors in name order (name, then raw bytes).
"""

from __future__ import annotations

from typing import Iterable, Mapping

from eth_utils import keccak

from federation.ids import Digest


def pseudonym_commitment(pseudonyms: Iterable[bytes]) -> Digest:
    """A node's commitment to the set of pseudonyms it used in one phase."""
    return Digest(keccak(b"".join(sorted(bytes(p) for p in pseudonyms))))


def combined_commitment(train_commitment: bytes, evaluate_commitment: bytes) -> Digest:
    """What a round anchor holds for a hospital: both phases of the round, in order (b"" for a missing one)."""
    return Digest(keccak(bytes(train_commitment) + bytes(evaluate_commitment)))


def model_hash(state: Mapping) -> Digest:
    """keccak-256 over a model's tensors in name order: the hash a round anchor records."""
    parts = []
    for name in sorted(state):
        parts.append(name.encode())
        parts.append(state[name].detach().contiguous().numpy().tobytes())
    return Digest(keccak(b"".join(parts)))
