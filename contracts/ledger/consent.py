"""The ConsentRegistry's part of the ledger client: consent reads at a block, enrolment, grants and
revocations (direct or relayed EIP-712 signatures), and following consent events.

`ConsentCalls` is mixed into :class:`contracts.ledger.client.Ledger`, which provides ``self.consent`` (the
registry contract), ``self.address``, ``self._read`` and ``self._transact``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import eth_abi
from eth_utils import keccak
from web3 import HTTPProvider

from contracts.ledger.consent_reads import (  # noqa: F401 - the bulk read's calldata, used by tests and benchmarks
    CONSENT_READERS, ConsentReads, _concurrent, _word32, abi_arrays, address_word,
)
from contracts.ledger.errors import ChainUnavailable, ContractRejected, LedgerError
from contracts.ledger.records import ConsentChange
from contracts.ledger.signing import SignedCancel, SignedGrant, SignedRevoke
from federation.ids import Digest, Pseudonym

if TYPE_CHECKING:
    from contracts.ledger.client import Ledger

# One eth_call answers this many pseudonyms; each costs a cold storage read (~2,100 gas) in the view,
# and nodes cap eth_call gas near the block gas limit.
CONSENT_BATCH = 4096
CONSENT_BITMAP_SELECTOR = keccak(text="consentBitmap(bytes32,bytes32[])")[:4]
# A hospital's own read (consentBitmapFor) also reads who enrolled each pseudonym and with which key: one more
# cold storage read and 32 more bytes of calldata per pseudonym, so half the batch.
OWN_CONSENT_BATCH = 2048
OWN_CONSENT_BITMAP_SELECTOR = keccak(text="consentBitmapFor(bytes32,address,bytes32[],address[])")[:4]
HAS_CONSENT_SELECTOR = keccak(text="hasConsent(bytes32,bytes32)")[:4]
CONSENT_OF_SELECTOR = keccak(text="consentOf(bytes32,bytes32)")[:4]
PATIENT_OF_SELECTOR = keccak(text="patientOf(bytes32)")[:4]
ENROL_BATCH = 200
GRANT_BATCH = 100
REVOKE_BATCH = 100
RAW_CALLS_PER_BATCH = 500  # eth_calls in one JSON-RPC batch (patient_states)
# RevocationSkipped's reason, as ConsentRegistry.Refusal numbers it.
REFUSALS = ("Valid", "Expired", "UnknownPseudonym", "NonceSpent", "WrongNonce", "WrongSigner")


class ConsentCalls(ConsentReads):
    """Reads and writes of the ConsentRegistry (the consent gate's reads by enrolment index: ConsentReads)."""

    # ---- reads ----

    def has_consent(self, pseudonym: bytes, study_id: bytes, *, block: int | str = "latest") -> bool:
        data = HAS_CONSENT_SELECTOR + _word32(pseudonym, "the pseudonym") + _word32(study_id, "the study id")
        return bool(self._words(self._raw_call(data, block), 1)[0])

    def consents(
        self, study_id: bytes, pseudonyms: Sequence[bytes], *, block: int | str, hospital: str | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[bool]:
        """Consent of every pseudonym for `study_id` at `block`, in order, from batched view calls.

        With `hospital` and `keys` (the consent key the hospital stored for each pseudonym) a pseudonym reads
        as consenting only if that hospital enrolled it with that key: the consent gate's question, so that
        a patient another hospital enrolled (or enrolled with its own key) is never read as consenting.

        The calls are encoded and decoded here, byte by byte as the ABI lays them out, and sent as raw
        `eth_call`s, up to CONSENT_READERS at once: web3's and eth_abi's per-argument checks in Python cost
        more than the chain's work (19 s of 1,000,000 pseudonyms, 7 s of it the calls)."""
        if (hospital is None) != (keys is None) or (keys is not None and len(keys) != len(pseudonyms)):
            raise ValueError("give both the hospital and one consent key per pseudonym, or neither")
        study = _word32(study_id, "the study id")
        batch = CONSENT_BATCH if hospital is None else OWN_CONSENT_BATCH
        if hospital is None:
            head = CONSENT_BITMAP_SELECTOR + study
        else:
            head = OWN_CONSENT_BITMAP_SELECTOR + study + address_word(hospital)

        def read(start: int, end: int) -> list[bool]:
            data = head + abi_arrays(pseudonyms[start:end], None if keys is None else keys[start:end],
                                  head_words=(len(head) - 4) // 32)
            return self._bitmap(self._raw_call(data, block), end - start)

        return self._in_chunks(read, len(pseudonyms), batch)

    def _raw_call(self, data: bytes, block: int | str) -> bytes:
        """One eth_call to the registry at `block`, as raw bytes. Over HTTP it goes to the provider as it is
        (web3's request formatters skipped); an error answer is asked again through web3, which raises what the
        ledger client raises for it everywhere else (a revert, a block the node does not serve, a reset chain)."""
        provider = self.w3.provider
        if isinstance(provider, HTTPProvider) and (isinstance(block, int) or block == "latest"):
            at = block if block == "latest" else hex(block)
            params = [{"to": self.consent.address, "data": "0x" + data.hex()}, at]
            answer = _answer_bytes(self._read(lambda: provider.make_request("eth_call", params)))
            if answer is not None:
                return answer
        return bytes(self._read(lambda: self.w3.eth.call({"to": self.consent.address, "data": data}, block)))

    def _bitmap(self, raw: bytes, count: int) -> list[bool]:
        """The `count` bits of an ABI-encoded uint256[] answer: bit (i % 256) of word (i / 256) is pseudonym i."""
        words = (count + 255) // 256
        if len(raw) != 64 + 32 * words or int.from_bytes(raw[:32], "big") != 32 \
                or int.from_bytes(raw[32:64], "big") != words:
            error = LedgerError(f"the consent answer for {count} pseudonyms does not decode "
                                f"({len(raw)} bytes, {64 + 32 * words} expected)")
            raise self._reset_or(error)
        bits = "".join(format(int.from_bytes(raw[64 + 32 * w: 96 + 32 * w], "big"), "0256b")[::-1]
                       for w in range(words))
        return [bit == "1" for bit in bits[:count]]

    def consent_window(self, pseudonym: bytes, study_id: bytes, *, block: int | str = "latest") -> tuple[int, int]:
        """(valid_from, valid_until) in unix seconds; (0, 0) when never granted or revoked."""
        valid_from, valid_until = self._words(self._raw_call(_consent_of_call(pseudonym, study_id), block), 2)
        return valid_from, valid_until

    def patient_nonce(self, pseudonym: bytes) -> int:
        """The patient's next signature nonce (patientOf's second field), at the latest block."""
        return self._words(self._raw_call(_patient_of_call(pseudonym), "latest"), 3)[1]

    def patient_states(self, study_id: bytes, pseudonyms: Sequence[bytes], *, window_block: int
                       ) -> list[tuple[int, int, int]]:
        """(next nonce at the latest block, valid_from, valid_until at `window_block`) of each pseudonym for
        `study_id`, in order: what signing many patients' changes at once needs, asked in JSON-RPC batches."""
        calls = []
        for pseudonym in pseudonyms:
            calls += [(_patient_of_call(pseudonym), "latest"), (_consent_of_call(pseudonym, study_id), window_block)]
        answers = self._raw_calls(calls)
        states = []
        for i in range(0, len(answers), 2):
            nonce = self._words(answers[i], 3)[1]
            valid_from, valid_until = self._words(answers[i + 1], 2)
            states.append((nonce, valid_from, valid_until))
        return states

    def _raw_calls(self, calls: list[tuple[bytes, int | str]], *, per_batch: int = RAW_CALLS_PER_BATCH) -> list[bytes]:
        """Many eth_calls to the registry (data, block) as raw bytes, in order: over HTTP sent as JSON-RPC batches
        of `per_batch`; a call answered with an error, or any other provider, goes through `_raw_call` alone
        (which raises what the client raises everywhere else)."""
        provider = self.w3.provider
        if not isinstance(provider, HTTPProvider):
            return [self._raw_call(data, block) for data, block in calls]
        answers: list[bytes] = []
        for start in range(0, len(calls), per_batch):
            chunk = calls[start:start + per_batch]
            requests = [("eth_call", [{"to": self.consent.address, "data": "0x" + data.hex()},
                                      block if isinstance(block, str) else hex(block)]) for data, block in chunk]
            responses = self._read(lambda: provider.make_batch_request(requests))
            if not isinstance(responses, list) or len(responses) != len(chunk):
                responses = [None] * len(chunk)  # an error for the whole batch: each call alone says which
            for (data, block), response in zip(chunk, responses):
                answer = _answer_bytes(response)
                answers.append(answer if answer is not None else self._raw_call(data, block))
        return answers

    def _words(self, raw: bytes, count: int) -> list[int]:
        """A view's answer of `count` static words (a bool, a struct of integers and addresses)."""
        if len(raw) != 32 * count:
            raise self._reset_or(LedgerError(f"the contract's answer does not decode ({len(raw)} bytes, "
                                             f"{32 * count} expected)"))
        return [int.from_bytes(raw[i:i + 32], "big") for i in range(0, len(raw), 32)]

    def consent_changes(self, study_id: bytes, *, from_block: int | None = None, to_block: int | str = "latest") -> list[ConsentChange]:
        """Grants and revocations for a study, in chain order (for caches and reports; the authoritative
        answer is always the view call at the pinned block)."""
        start = self.deployment.deployed_block if from_block is None else from_block
        changes = []
        for event, granted in ((self.consent.events.ConsentGranted, True), (self.consent.events.ConsentRevoked, False)):
            logs = self._read(
                lambda: event.get_logs(from_block=start, to_block=to_block, argument_filters={"studyId": study_id})
            )
            changes += [
                (log["blockNumber"], log["logIndex"], ConsentChange(Pseudonym(log["args"]["pseudonym"]), study_id, granted, log["blockNumber"]))
                for log in logs
            ]
        return [change for _, _, change in sorted(changes, key=lambda c: (c[0], c[1]))]

    def follow_consent_changes(self, study_id: bytes, *, from_block: int | None = None) -> "ConsentFollower":
        return ConsentFollower(self, study_id, from_block=from_block)


    # ---- writes ----

    def enrolment_commitment(self, pseudonyms: Sequence[bytes], keys: Sequence[str]) -> Digest:
        """What this hospital commits to before enrolling exactly these patients (the registry's
        enrolmentCommitment): it binds the hospital's own address, so nobody else can use it."""
        encoded = eth_abi.encode(["address", "bytes32[]", "address[]"], [self.signer, list(pseudonyms), list(keys)])
        return Digest(keccak(encoded))

    def enrol(self, pseudonyms: Sequence[bytes], keys: Sequence[str]) -> list[dict]:
        """Enrol patients in two steps that cannot be front-run: commit to every batch first (the pseudonyms
        stay hidden), then enrol each batch in a later block. Returns the enrolment receipts."""
        if self.address is None:
            raise LedgerError("this ledger client is read-only: it has no account key")
        batches = [
            (list(pseudonyms[i : i + ENROL_BATCH]), list(keys[i : i + ENROL_BATCH]))
            for i in range(0, len(pseudonyms), ENROL_BATCH)
        ]
        for batch in batches:
            self._transact(self.consent.functions.commitEnrolment(self.enrolment_commitment(*batch)))
        # Each receipt above is mined, so every enrolment below runs in a later block than its commitment. Its
        # gas is estimated at the pending block: a node (anvil) that estimates at the latest block would
        # run it in the commitment's own block, where the registry refuses it. (The in-process chain has no
        # estimate at "pending" but estimates there anyway: there the usual estimate is used.)
        receipts = []
        for batch in batches:
            fn = self.consent.functions.enrol(*batch)
            try:
                call = _WithGas(fn, self._read(lambda: fn.estimate_gas({"from": self.signer}, block_identifier="pending")))
            except (ContractRejected, ChainUnavailable):
                raise
            except LedgerError:
                call = fn
            receipts.append(self._transact(call))
        return receipts

    def grant(self, pseudonym: bytes, study_id: bytes, *, valid_from: int, valid_until: int) -> dict:
        return self._transact(self.consent.functions.grant(pseudonym, study_id, valid_from, valid_until))

    def revoke(self, pseudonym: bytes, study_id: bytes) -> dict:
        return self._transact(self.consent.functions.revoke(pseudonym, study_id))

    def relay_grants(self, grants: Sequence[SignedGrant]) -> list[dict]:
        """Relay patients' signed grants, many per transaction. In a batch, a grant somebody relayed first
        (or the patient voided) is skipped, not fatal: `skipped_grants(receipts)` says which."""
        functions = self.consent.functions
        return self._relay_in_batches(grants, GRANT_BATCH, functions.grantBySig, functions.grantBatchBySig)

    def skipped_grants(self, receipts: Sequence[dict]) -> list[tuple[Pseudonym, int]]:
        """(pseudonym, nonce) of every grant a batch skipped because its nonce was already spent."""
        from web3.logs import DISCARD

        return [
            (Pseudonym(event["args"]["pseudonym"]), int(event["args"]["nonce"]))
            for receipt in receipts
            for event in self.consent.events.GrantSkipped().process_receipt(receipt, errors=DISCARD)
        ]

    def cancel_signatures(self, pseudonym: bytes) -> dict:
        return self._transact(self.consent.functions.cancelSignatures(pseudonym))

    def relay_cancel(self, cancel: SignedCancel) -> dict:
        return self._transact(
            self.consent.functions.cancelSignaturesBySig(cancel.pseudonym, cancel.nonce, cancel.deadline, cancel.signature)
        )

    def relay_revoke(self, revoke: SignedRevoke) -> dict:
        return self._transact(self.consent.functions.revokeBySig(revoke.as_struct(), revoke.signature))

    def relay_revokes(self, revokes: Sequence[SignedRevoke]) -> list[dict]:
        """Relay patients' signed revocations, many per transaction. In a batch, a revocation that is expired,
        replayed, signed ahead, forged or for an unknown pseudonym is skipped, never fatal to the others:
        `skipped_revocations(receipts)` says which and why. A lone one is sent as `revokeBySig` (refused with
        its reason)."""
        functions = self.consent.functions
        return self._relay_in_batches(revokes, REVOKE_BATCH, functions.revokeBySig, functions.revokeBatchBySig)

    def _relay_in_batches(self, signed: Sequence, size: int, one, many) -> list[dict]:
        """A transaction per `size` signed changes: `many(structs, signatures)`, or `one(struct, signature)` for a
        chunk of one."""
        receipts = []
        for i in range(0, len(signed), size):
            chunk = signed[i : i + size]
            if len(chunk) == 1:
                fn = one(chunk[0].as_struct(), chunk[0].signature)
            else:
                fn = many([s.as_struct() for s in chunk], [s.signature for s in chunk])
            receipts.append(self._transact(fn))
        return receipts

    def skipped_revocations(self, receipts: Sequence[dict]) -> list[tuple[Pseudonym, int, str]]:
        """(pseudonym, nonce, reason) of every revocation a batch skipped; the reason is a `REFUSALS` name."""
        from web3.logs import DISCARD

        return [
            (Pseudonym(event["args"]["pseudonym"]), int(event["args"]["nonce"]), REFUSALS[event["args"]["reason"]])
            for receipt in receipts
            for event in self.consent.events.RevocationSkipped().process_receipt(receipt, errors=DISCARD)
        ]


class _WithGas:
    """A contract call whose transaction carries a gas limit known in advance (web3 then skips its estimate)."""

    def __init__(self, fn, gas: int):
        self._fn, self._gas = fn, gas

    def build_transaction(self, tx: dict) -> dict:
        return self._fn.build_transaction({**tx, "gas": self._gas})


class ConsentFollower:
    """Follows a study's consent events block by block: `poll()` returns what changed since the last poll."""

    def __init__(self, ledger: "Ledger", study_id: bytes, *, from_block: int | None = None):
        self.ledger = ledger
        self.study_id = study_id
        self.next_block = ledger.deployment.deployed_block if from_block is None else from_block

    def poll(self) -> list[ConsentChange]:
        latest = self.ledger.block_number()
        if latest < self.next_block:
            return []
        changes = self.ledger.consent_changes(self.study_id, from_block=self.next_block, to_block=latest)
        self.next_block = latest + 1
        return changes


def _patient_of_call(pseudonym: bytes) -> bytes:
    return PATIENT_OF_SELECTOR + _word32(pseudonym, "the pseudonym")


def _consent_of_call(pseudonym: bytes, study_id: bytes) -> bytes:
    return CONSENT_OF_SELECTOR + _word32(pseudonym, "the pseudonym") + _word32(study_id, "the study id")


def _answer_bytes(response) -> bytes | None:
    """An eth_call's result as bytes, or None for an error answer or one that does not decode (the caller then
    asks through web3, which raises what the ledger client raises everywhere else)."""
    result = response.get("result") if isinstance(response, dict) and "error" not in response else None
    if not (isinstance(result, str) and result.startswith("0x")):
        return None
    try:
        return bytes.fromhex(result[2:])
    except ValueError:
        return None
