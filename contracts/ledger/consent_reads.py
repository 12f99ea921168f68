"""The consent gate's bulk reads by enrolment index (ConsentRegistry.enrolmentIndexes and consentBitmapOfIndexes).

A patient's enrolment never changes once made: `enrol` writes the pseudonym's hospital, consent key and index
once and refuses a pseudonym enrolled already. So a node that verified once, at a block it trusts, that this
hospital enrolled pseudonym P with key K at index I (`enrolment_indexes`) can read P's consent afterwards by I
alone (`consents_by_index`): 4 bytes of calldata per patient, and one storage word per four patients enrolled
together, instead of 64 bytes and three cold storage reads.

`ConsentReads` is mixed into :class:`contracts.ledger.consent.ConsentCalls`, which provides ``_raw_call`` and
``_bitmap``. The bulk reads' calldata, encoded by hand as abi.encode lays it out (every bulk read's, the read by
binding's too), is at the end of this module.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import numpy
from eth_utils import keccak
from web3 import HTTPProvider

from contracts.ledger.errors import LedgerError

T = TypeVar("T")

ENROLMENT_INDEXES_SELECTOR = keccak(text="enrolmentIndexes(address,bytes32[],address[])")[:4]
CONSENT_BY_INDEX_SELECTOR = keccak(text="consentBitmapOfIndexes(bytes32,bytes)")[:4]
# Batch sizes under a 30,000,000-gas eth_call cap (anvil's default; nodes cap eth_call gas near the block gas
# limit) in the worst case, measured with eth_estimateGas on anvil and kept under 80% of the cap by
# tests/contracts/test_consent_by_index.py: a pseudonym enrolled by the hospital costs enrolmentIndexes two cold
# storage reads, about 5,900 gas (18.1 M for 3,072); an index in a storage word of its own costs
# consentBitmapOfIndexes one, about 2,700 gas (22.0 M for 8,192; patients enrolled together share words, four
# to one, so a node's own indexes cost about a quarter of that).
ENROLMENT_INDEX_BATCH = 3072
CONSENT_BY_INDEX_BATCH = 8192
# eth_calls of one bulk read in flight at once (a chain node answers each on a thread of its own).
CONSENT_READERS = 4
MAX_INDEX = 2**32 - 1


class ConsentReads:
    """The consent gate's reads: enrolment indexes once per patient, then consent by index every round."""

    def enrolment_indexes(
        self, pseudonyms: Sequence[bytes], keys: Sequence[str], *, hospital: str, block: int | str,
    ) -> list[int]:
        """The enrolment index of each pseudonym at `block` if `hospital` enrolled it bound to keys[i], else 0
        (another hospital enrolled it, or with another key, or nobody yet)."""
        if len(keys) != len(pseudonyms):
            raise ValueError("give one consent key per pseudonym")
        head = ENROLMENT_INDEXES_SELECTOR + address_word(hospital)

        def read(start: int, end: int) -> list[int]:
            data = head + abi_arrays(pseudonyms[start:end], keys[start:end], head_words=1)
            return self._indexes(self._raw_call(data, block), end - start)

        return self._in_chunks(read, len(pseudonyms), ENROLMENT_INDEX_BATCH)

    def consents_by_index(self, study_id: bytes, indexes: Sequence[int], *, block: int | str) -> list[bool]:
        """Consent for `study_id` at `block` of the patients at these enrolment indexes, in order. It reads
        consent windows only: pass indexes `enrolment_indexes` verified on this chain (0 reads as no consent)."""
        study = _word32(study_id, "the study id")
        packed = _packed_indexes(indexes)

        def read(start: int, end: int) -> list[bool]:
            data = consent_by_index_call(study, packed[4 * start: 4 * end])
            return self._bitmap(self._raw_call(data, block), end - start)

        return self._in_chunks(read, len(packed) // 4, CONSENT_BY_INDEX_BATCH)

    def registry_identity(self) -> str:
        """A short digest naming this deployment of the registry: chain id, registry address, the signing domain's
        salt and the deployment block's hash. A chain reset or a redeployment changes it, so an enrolment index
        cached under it is never used on another registry."""
        d = self.deployment
        named = f"{d.chain_id}:{d.consent_registry.lower()}:{d.consent_domain_salt.lower()}:{d.deployed_block_hash}"
        return keccak(text=named)[:8].hex()

    def _in_chunks(self, read: Callable[[int, int], list[T]], total: int, batch: int) -> list[T]:
        """read(start, end) over [0, total) in chunks of `batch`, CONSENT_READERS at once over HTTP (the in-process
        test chain is not thread-safe), joined in order."""
        chunks = [(start, min(start + batch, total)) for start in range(0, total, batch)]
        if len(chunks) > 1 and _concurrent(self.w3):
            with ThreadPoolExecutor(max_workers=min(CONSENT_READERS, len(chunks))) as pool:
                parts = list(pool.map(lambda chunk: read(*chunk), chunks))
        else:
            parts = [read(*chunk) for chunk in chunks]
        return [item for part in parts for item in part]

    def _indexes(self, raw: bytes, count: int) -> list[int]:
        """The `count` entries of an ABI-encoded uint32[] answer."""
        words = numpy.frombuffer(raw[64:], dtype=numpy.uint8).reshape(-1, 32) if len(raw) >= 64 else None
        if (words is None or len(raw) != 64 + 32 * count or int.from_bytes(raw[:32], "big") != 32
                or int.from_bytes(raw[32:64], "big") != count or words[:, :28].any()):
            raise self._reset_or(LedgerError(f"the enrolment indexes of {count} pseudonyms do not decode "
                                             f"({len(raw)} bytes, {64 + 32 * count} expected)"))
        return words[:, 28:].copy().view(">u4").ravel().tolist()


def consent_by_index_call(study: bytes, packed: bytes) -> bytes:
    """consentBitmapOfIndexes(study, packed)'s calldata: the selector, the study, then the bytes argument."""
    return (CONSENT_BY_INDEX_SELECTOR + study + (64).to_bytes(32, "big") + len(packed).to_bytes(32, "big") + packed
            + bytes(-len(packed) % 32))


def _packed_indexes(indexes: Sequence[int]) -> bytes:
    """Enrolment indexes as big-endian uint32s, four bytes each (consentBitmapOfIndexes's calldata)."""
    if not len(indexes):
        return b""
    values = numpy.asarray(indexes)
    if values.ndim != 1 or values.dtype.kind not in "iu":
        raise ValueError("enrolment indexes must be whole numbers")
    if values.min() < 0 or values.max() > MAX_INDEX:
        raise ValueError(f"an enrolment index must be between 0 and {MAX_INDEX}")
    return values.astype(">u4").tobytes()


# ---- the bulk read's calldata, by hand (as abi.encode lays it out) ----

ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def _word32(value: bytes, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes")
    return bytes(value)


def address_word(address: str) -> bytes:
    """An address as an ABI word (twelve zero bytes, then its twenty)."""
    if not isinstance(address, str) or not ADDRESS.fullmatch(address):
        raise ValueError(f"not an address: {address!r}")
    return bytes(12) + bytes.fromhex(address[2:])


def _address_words(keys: Sequence[str]) -> bytes:
    """Many addresses as ABI words, checked all at once (0x and 40 hex digits each; any letter case)."""
    n = len(keys)
    joined = "".join(keys)
    if len(joined) != 42 * n or joined[0::42] != "0" * n or joined[1::42].lower() != "x" * n:
        raise ValueError("every consent key must be an address: 0x and 40 hex digits")
    try:
        raw = bytes.fromhex(joined.replace("0x", "").replace("0X", ""))  # an "x" elsewhere leaves raw short
    except ValueError:
        raw = b""
    if len(raw) != 20 * n:
        raise ValueError("every consent key must be an address: 0x and 40 hex digits")
    words = numpy.zeros((n, 32), dtype=numpy.uint8)
    words[:, 12:] = numpy.frombuffer(raw, dtype=numpy.uint8).reshape(n, 20)
    return words.tobytes()


def abi_arrays(pseudonyms: Sequence[bytes], keys: Sequence[str] | None, *, head_words: int) -> bytes:
    """abi.encode's tail of (bytes32[] pseudonyms[, address[] keys]) after `head_words` static words."""
    n = len(pseudonyms)
    packed = b"".join(pseudonyms)
    if len(packed) != 32 * n or (n and set(map(len, pseudonyms)) != {32}):
        raise ValueError("every pseudonym must be 32 bytes")
    first = 32 * (head_words + (1 if keys is None else 2))
    if keys is None:
        return first.to_bytes(32, "big") + n.to_bytes(32, "big") + packed
    head = first.to_bytes(32, "big") + (first + 32 + 32 * n).to_bytes(32, "big")
    return head + n.to_bytes(32, "big") + packed + n.to_bytes(32, "big") + _address_words(keys)


def _concurrent(w3) -> bool:
    """Whether eth_calls may go out in parallel: over HTTP (the in-process test chain is not thread-safe)."""
    return isinstance(w3.provider, HTTPProvider)
