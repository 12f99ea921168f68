"""The Python client of the TwinLedger contracts: one module for nodes, the coordinator, auditors and the portal.

Reads take a ``block`` so that every consent question is asked at the block a round pinned; writes sign
locally with the caller's key and wait for the receipt. Every failure surfaces as a :class:`LedgerError`
that says what went wrong in the domain's words.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import eth_abi
import requests
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    Web3RPCError,
)

CONSENT_DOMAIN_NAME = "TwinLedger Consent"
CONSENT_DOMAIN_VERSION = "1"
# One eth_call answers this many pseudonyms; each costs a cold storage read (~2,100 gas) in the view,
# and nodes cap eth_call gas near the block gas limit.
CONSENT_BATCH = 4096
CONSENT_BITMAP_SELECTOR = keccak(text="consentBitmap(bytes32,bytes32[])")[:4]
ENROL_BATCH = 200
GRANT_BATCH = 100
MILLI = 1000


class LedgerError(Exception):
    """A ledger operation failed; the message says why in the domain's words."""


class ChainUnavailable(LedgerError):
    """The chain node could not be reached or did not answer in time."""


class ContractRejected(LedgerError):
    """A contract refused the call (a revert), with the decoded reason."""

    def __init__(self, message: str, *, error_name: str | None = None):
        super().__init__(message)
        self.error_name = error_name


# How each custom error reads to a person; arguments are formatted in order.
_ERROR_TEXT = {
    "HospitalAlreadyRegistered": "hospital account {0} is already registered",
    "UnknownHospital": "account {0} is not a registered hospital",
    "HospitalSuspended": "hospital {0} is suspended",
    "StudyAlreadyExists": "a study with id {0} already exists",
    "UnknownStudy": "study {0} is not known to the consortium",
    "StudyNotLive": "study {0} is suspended or has ended",
    "InvalidStudyTerms": "the study terms are invalid (budget, rounds, delta and end date must be set)",
    "RoundAlreadyAnchored": "round {1} of study {0} is already anchored",
    "RoundOutOfRange": "round {1} is outside the rounds study {0} allows",
    "PinnedBlockInFuture": "pinned block {0} is in the future",
    "CommitmentLengthMismatch": "hospitals and commitments differ in length",
    "NotAnActiveHospital": "account {0} is not an active hospital",
    "AlreadyEnrolled": "pseudonym {0} is already enrolled",
    "UnknownPseudonym": "pseudonym {0} is not enrolled",
    "InvalidPatientKey": "a patient's consent key must not be the zero address",
    "LengthMismatch": "the lists passed differ in length",
    "NotPatient": "only the patient's own key may change the consent of {0} (caller {1})",
    "InvalidWindow": "the consent window [{0}, {1}) is empty, already over, or ends after 2106",
    "TooManyPatients": "the registry cannot enrol more patients",
    "SignatureExpired": "the patient's signature expired at {0}",
    "WrongNonce": "signature for {0} is replayed or out of order (expected nonce {1}, got {2})",
    "WrongSigner": "the signature for {0} is not the patient's",
    "AccessControlUnauthorizedAccount": "account {0} lacks the role {1}",
}


def to_bytes32(text: str) -> bytes:
    """An ASCII code (purpose, task id) as a left-aligned bytes32."""
    raw = text.encode("ascii")
    if len(raw) > 32:
        raise ValueError(f"{text!r} is longer than 32 bytes")
    return raw.ljust(32, b"\0")


def from_bytes32(value: bytes) -> str:
    return bytes(value).rstrip(b"\0").decode("ascii", errors="replace")


def new_pseudonym() -> bytes:
    """A fresh random 32-byte pseudonym: carries nothing about the patient."""
    return secrets.token_bytes(32)


def new_study_id() -> bytes:
    return secrets.token_bytes(32)


def pseudonym_commitment(pseudonyms: Iterable[bytes]) -> bytes:
    """keccak256 of the sorted, concatenated pseudonyms: a node's commitment to the set it used."""
    return keccak(b"".join(sorted(bytes(p) for p in pseudonyms)))


@dataclass(frozen=True)
class Deployment:
    """Where the contracts live on a chain, with their ABIs, so that readers need no compiler."""

    chain_id: int
    consortium: str
    consent_registry: str
    deployed_block: int
    abis: dict

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.__dict__, indent=1))

    @classmethod
    def load(cls, path: Path) -> "Deployment":
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except FileNotFoundError as exc:
            raise LedgerError(f"no deployment file at {path}: deploy the contracts first") from exc
        except (json.JSONDecodeError, TypeError) as exc:
            raise LedgerError(f"deployment file {path} is malformed: {exc}") from exc


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


@dataclass(frozen=True)
class RoundAnchor:
    study_id: bytes
    round: int
    pinned_block: int
    model_hash: bytes
    commitments: dict[str, bytes]  # hospital account -> commitment
    anchored_block: int


@dataclass(frozen=True)
class ConsentChange:
    pseudonym: bytes
    study_id: bytes
    granted: bool
    block: int


@dataclass(frozen=True)
class SignedGrant:
    pseudonym: bytes
    study_id: bytes
    valid_from: int
    valid_until: int
    nonce: int
    deadline: int
    signature: bytes

    def as_struct(self) -> tuple:
        return (self.pseudonym, self.study_id, self.valid_from, self.valid_until, self.nonce, self.deadline)


@dataclass(frozen=True)
class SignedRevoke:
    pseudonym: bytes
    study_id: bytes
    nonce: int
    deadline: int
    signature: bytes

    def as_struct(self) -> tuple:
        return (self.pseudonym, self.study_id, self.nonce, self.deadline)


def _consent_domain(deployment: Deployment) -> dict:
    return {
        "name": CONSENT_DOMAIN_NAME,
        "version": CONSENT_DOMAIN_VERSION,
        "chainId": deployment.chain_id,
        "verifyingContract": deployment.consent_registry,
    }


_GRANT_TYPES = {
    "Grant": [
        {"name": "pseudonym", "type": "bytes32"},
        {"name": "studyId", "type": "bytes32"},
        {"name": "validFrom", "type": "uint64"},
        {"name": "validUntil", "type": "uint64"},
        {"name": "nonce", "type": "uint64"},
        {"name": "deadline", "type": "uint64"},
    ]
}
_REVOKE_TYPES = {
    "Revoke": [
        {"name": "pseudonym", "type": "bytes32"},
        {"name": "studyId", "type": "bytes32"},
        {"name": "nonce", "type": "uint64"},
        {"name": "deadline", "type": "uint64"},
    ]
}


def sign_grant(
    patient_key: bytes | str,
    deployment: Deployment,
    *,
    pseudonym: bytes,
    study_id: bytes,
    valid_from: int,
    valid_until: int,
    nonce: int,
    deadline: int,
) -> SignedGrant:
    """The patient signs a consent grant (EIP-712) for a hospital or the portal to relay."""
    message = {
        "pseudonym": pseudonym,
        "studyId": study_id,
        "validFrom": valid_from,
        "validUntil": valid_until,
        "nonce": nonce,
        "deadline": deadline,
    }
    signed = Account.sign_typed_data(patient_key, _consent_domain(deployment), _GRANT_TYPES, message)
    return SignedGrant(pseudonym, study_id, valid_from, valid_until, nonce, deadline, bytes(signed.signature))


_CANCEL_TYPES = {
    "Cancel": [
        {"name": "pseudonym", "type": "bytes32"},
        {"name": "nonce", "type": "uint64"},
        {"name": "deadline", "type": "uint64"},
    ]
}


@dataclass(frozen=True)
class SignedCancel:
    pseudonym: bytes
    nonce: int
    deadline: int
    signature: bytes


def sign_cancel(patient_key: bytes | str, deployment: Deployment, *, pseudonym: bytes, nonce: int, deadline: int) -> SignedCancel:
    """The patient signs a request to void all their outstanding signatures."""
    message = {"pseudonym": pseudonym, "nonce": nonce, "deadline": deadline}
    signed = Account.sign_typed_data(patient_key, _consent_domain(deployment), _CANCEL_TYPES, message)
    return SignedCancel(pseudonym, nonce, deadline, bytes(signed.signature))


def sign_revoke(
    patient_key: bytes | str, deployment: Deployment, *, pseudonym: bytes, study_id: bytes, nonce: int, deadline: int
) -> SignedRevoke:
    """The patient signs a revocation (EIP-712) for a hospital or the portal to relay."""
    message = {"pseudonym": pseudonym, "studyId": study_id, "nonce": nonce, "deadline": deadline}
    signed = Account.sign_typed_data(patient_key, _consent_domain(deployment), _REVOKE_TYPES, message)
    return SignedRevoke(pseudonym, study_id, nonce, deadline, bytes(signed.signature))


def connect(rpc_url: str, *, timeout_s: float = 10.0) -> Web3:
    """A Web3 connection to a JSON-RPC chain node; raises ChainUnavailable if it does not answer."""
    # web3 asks eth_chainId around every eth_call; an endpoint's chain id does not change, so only it is cached
    # (blocks, "latest" above all, never are: the consent gate's freshness check depends on them).
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}, cache_allowed_requests=True,
                                cacheable_requests={"eth_chainId"}))
    try:
        w3.eth.chain_id
    except Exception as exc:  # noqa: BLE001 - any transport failure means the same to the caller
        raise ChainUnavailable(f"the chain at {rpc_url} cannot be reached ({_transport_reason(exc)})") from exc
    return w3


def _transport_reason(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower() or isinstance(exc, (TimeoutError, requests.exceptions.Timeout)):
        return "no answer in time"
    return type(exc).__name__


def load_key(path: Path) -> str:
    """Read a hex private key file (created with owner-only permissions)."""
    try:
        return Path(path).read_text().strip()
    except FileNotFoundError as exc:
        raise LedgerError(f"no key file at {path}") from exc


def write_key(path: Path, key_hex: str | None = None) -> str:
    """Create a key file readable by its owner only; returns the key."""
    key_hex = key_hex or "0x" + secrets.token_hex(32)
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


def deploy(w3: Web3, operator_key: str, *, artifacts: dict | None = None, timeout_s: float = 60) -> Deployment:
    """Deploy the consortium and the consent registry, with `operator_key` as the consortium's operator."""
    if artifacts is None:
        from contracts.build import compile_contracts

        artifacts = compile_contracts()
    operator = Account.from_key(operator_key)
    chain_id = w3.eth.chain_id

    def _create(name: str, *args) -> str:
        factory = w3.eth.contract(abi=artifacts[name]["abi"], bytecode=artifacts[name]["bytecode"])
        tx = factory.constructor(*args).build_transaction(
            {"from": operator.address, "nonce": w3.eth.get_transaction_count(operator.address, "pending"), "chainId": chain_id}
        )
        signed = Account.sign_transaction(tx, operator_key)
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=timeout_s)
        if receipt["status"] != 1:
            raise LedgerError(f"deploying {name} failed (transaction {receipt['transactionHash'].hex()})")
        return receipt["contractAddress"], receipt["blockNumber"]

    consortium, first_block = _create("Consortium", operator.address)
    registry, _ = _create("ConsentRegistry", consortium)
    return Deployment(
        chain_id=chain_id,
        consortium=consortium,
        consent_registry=registry,
        deployed_block=first_block,
        abis={name: artifacts[name]["abi"] for name in ("Consortium", "ConsentRegistry")},
    )


class Ledger:
    """Reads and writes the TwinLedger contracts as one account (or read-only, without a key)."""

    def __init__(self, w3: Web3, deployment: Deployment, *, account_key: str | None = None, receipt_timeout_s: float = 60):
        self.w3 = w3
        self.deployment = deployment
        self._key = account_key
        self.address = Account.from_key(account_key).address if account_key else None
        self.receipt_timeout_s = receipt_timeout_s
        if w3.eth.chain_id != deployment.chain_id:
            raise LedgerError(
                f"the chain answers with chain id {w3.eth.chain_id}, the deployment is for {deployment.chain_id}"
            )
        self.consortium = w3.eth.contract(address=deployment.consortium, abi=deployment.abis["Consortium"])
        self.consent = w3.eth.contract(address=deployment.consent_registry, abi=deployment.abis["ConsentRegistry"])
        self._errors = _error_decoder(deployment.abis)

    @classmethod
    def open(
        cls, rpc_url: str, deployment_path: Path, *, key_path: Path | None = None, timeout_s: float = 10.0
    ) -> "Ledger":
        deployment = Deployment.load(deployment_path)
        key = load_key(key_path) if key_path else None
        return cls(connect(rpc_url, timeout_s=timeout_s), deployment, account_key=key)

    @classmethod
    def from_settings(cls, settings, *, key_file: Path | None = None) -> "Ledger":
        """The one way a component opens the ledger: from its settings' `rpc_url`, `deployment_file` and
        `chain_timeout_s`, as `key_file`'s account (read-only without one)."""
        if not settings.deployment_file:
            raise ChainUnavailable("no deployment file is configured (deployment-file): run 'twinledger chain deploy'")
        return cls.open(settings.rpc_url, Path(settings.deployment_file), key_path=key_file,
                        timeout_s=settings.chain_timeout_s)

    # ---- reads ----

    def block_number(self) -> int:
        return self._read(lambda: self.w3.eth.block_number)

    def block_timestamp(self, block: int | str = "latest") -> int:
        return int(self._read(lambda: self.w3.eth.get_block(block)["timestamp"]))

    def study(self, study_id: bytes, *, block: int | str = "latest") -> StudyTerms:
        raw = self._read(lambda: self.consortium.functions.study(study_id).call(block_identifier=block))
        purpose, task, categories, eps_milli, delta_exp, rounds, ends_at, _exists, suspended = raw
        return StudyTerms(
            study_id=study_id,
            purpose=from_bytes32(purpose),
            task_id=from_bytes32(task),
            data_categories=int.from_bytes(categories, "big"),
            epsilon_budget=eps_milli / MILLI,
            delta=10.0 ** -delta_exp,
            rounds=rounds,
            ends_at=ends_at,
            suspended=suspended,
        )

    def is_study_live_for(self, study_id: bytes, hospital: str, *, block: int | str = "latest") -> bool:
        return self._read(
            lambda: self.consortium.functions.isStudyLiveFor(study_id, hospital).call(block_identifier=block)
        )

    def has_consent(self, pseudonym: bytes, study_id: bytes, *, block: int | str = "latest") -> bool:
        return self._read(lambda: self.consent.functions.hasConsent(pseudonym, study_id).call(block_identifier=block))

    def consents(self, study_id: bytes, pseudonyms: Sequence[bytes], *, block: int | str) -> list[bool]:
        """Consent of every pseudonym for `study_id` at `block`, in order, from batched view calls."""
        answer: list[bool] = []
        for start in range(0, len(pseudonyms), CONSENT_BATCH):
            chunk = list(pseudonyms[start : start + CONSENT_BATCH])
            # Encoded with eth_abi directly: web3's contract layer validates each of thousands of arguments in
            # Python (about 8 ms for 200 pseudonyms, against 0.1 ms).
            data = CONSENT_BITMAP_SELECTOR + eth_abi.encode(["bytes32", "bytes32[]"], [study_id, chunk])
            raw = self._read(lambda: self.w3.eth.call({"to": self.consent.address, "data": data}, block))
            try:
                (words,) = eth_abi.decode(["uint256[]"], bytes(raw))
            except Exception as exc:  # noqa: BLE001 - any undecodable answer is unclear
                raise LedgerError(f"the consent answer for {len(chunk)} pseudonyms does not decode: {exc}") from exc
            if not isinstance(words, (list, tuple)) or len(words) != (len(chunk) + 255) // 256:
                raise LedgerError(f"the consent answer for {len(chunk)} pseudonyms is malformed")
            answer.extend(bool((words[i >> 8] >> (i & 255)) & 1) for i in range(len(chunk)))
        return answer

    def accepted_studies(self, hospital: str) -> list[bytes]:
        """The studies `hospital` accepted, from the StudyAccepted events, in the order it accepted them."""
        logs = self._read(
            lambda: self.consortium.events.StudyAccepted.get_logs(
                from_block=self.deployment.deployed_block, argument_filters={"hospital": hospital}
            )
        )
        seen: list[bytes] = []
        for log in sorted(logs, key=lambda entry: (entry["blockNumber"], entry["logIndex"])):
            study = bytes(log["args"]["studyId"])
            if study not in seen:
                seen.append(study)
        return seen

    def consent_window(self, pseudonym: bytes, study_id: bytes, *, block: int | str = "latest") -> tuple[int, int]:
        """(valid_from, valid_until) in unix seconds; (0, 0) when never granted or revoked."""
        record = self._read(lambda: self.consent.functions.consentOf(pseudonym, study_id).call(block_identifier=block))
        return int(record[0]), int(record[1])

    def patient_nonce(self, pseudonym: bytes) -> int:
        return self._read(lambda: self.consent.functions.patientOf(pseudonym).call())[1]

    def anchor_of(self, study_id: bytes, round_number: int) -> bytes | None:
        """The model hash anchored for a round, or None if the round is not anchored yet."""
        digest = self._read(lambda: self.consortium.functions.anchorOf(study_id, round_number).call())
        return bytes(digest) if any(digest) else None

    def round_anchors(self, study_id: bytes) -> list[RoundAnchor]:
        logs = self._read(
            lambda: self.consortium.events.RoundAnchored.get_logs(
                from_block=self.deployment.deployed_block, argument_filters={"studyId": study_id}
            )
        )
        anchors = []
        for log in logs:
            args = log["args"]
            anchors.append(
                RoundAnchor(
                    study_id=bytes(args["studyId"]),
                    round=args["round"],
                    pinned_block=args["pinnedBlock"],
                    model_hash=bytes(args["modelHash"]),
                    commitments={h: bytes(c) for h, c in zip(args["hospitals"], args["commitments"])},
                    anchored_block=log["blockNumber"],
                )
            )
        return sorted(anchors, key=lambda a: a.round)

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
                (log["blockNumber"], log["logIndex"], ConsentChange(bytes(log["args"]["pseudonym"]), study_id, granted, log["blockNumber"]))
                for log in logs
            ]
        return [change for _, _, change in sorted(changes, key=lambda c: (c[0], c[1]))]

    def follow_consent_changes(self, study_id: bytes, *, from_block: int | None = None) -> "ConsentFollower":
        return ConsentFollower(self, study_id, from_block=from_block)

    # ---- writes ----

    def register_hospital(self, account: str, node_id: bytes) -> dict:
        return self._transact(self.consortium.functions.registerHospital(account, node_id))

    def grant_coordinator(self, account: str) -> dict:
        role = self._read(lambda: self.consortium.functions.COORDINATOR_ROLE().call())
        return self._transact(self.consortium.functions.grantRole(role, account))

    def propose_study(
        self,
        study_id: bytes,
        *,
        purpose: str,
        task_id: str,
        epsilon_budget: float,
        delta_exponent: int,
        rounds: int,
        ends_at: int,
        data_categories: int = 0,
    ) -> dict:
        return self._transact(
            self.consortium.functions.proposeStudy(
                study_id,
                to_bytes32(purpose),
                to_bytes32(task_id),
                data_categories.to_bytes(32, "big"),
                round(epsilon_budget * MILLI),
                delta_exponent,
                rounds,
                ends_at,
            )
        )

    def accept_study(self, study_id: bytes) -> dict:
        return self._transact(self.consortium.functions.acceptStudy(study_id))

    def enrol(self, pseudonyms: Sequence[bytes], keys: Sequence[str]) -> list[dict]:
        return [
            self._transact(self.consent.functions.enrol(list(pseudonyms[i : i + ENROL_BATCH]), list(keys[i : i + ENROL_BATCH])))
            for i in range(0, len(pseudonyms), ENROL_BATCH)
        ]

    def grant(self, pseudonym: bytes, study_id: bytes, *, valid_from: int, valid_until: int) -> dict:
        return self._transact(self.consent.functions.grant(pseudonym, study_id, valid_from, valid_until))

    def revoke(self, pseudonym: bytes, study_id: bytes) -> dict:
        return self._transact(self.consent.functions.revoke(pseudonym, study_id))

    def relay_grants(self, grants: Sequence[SignedGrant]) -> list[dict]:
        """Relay patients' signed grants, many per transaction."""
        receipts = []
        for i in range(0, len(grants), GRANT_BATCH):
            chunk = grants[i : i + GRANT_BATCH]
            if len(chunk) == 1:
                fn = self.consent.functions.grantBySig(chunk[0].as_struct(), chunk[0].signature)
            else:
                fn = self.consent.functions.grantBatchBySig([g.as_struct() for g in chunk], [g.signature for g in chunk])
            receipts.append(self._transact(fn))
        return receipts

    def cancel_signatures(self, pseudonym: bytes) -> dict:
        return self._transact(self.consent.functions.cancelSignatures(pseudonym))

    def relay_cancel(self, cancel: SignedCancel) -> dict:
        return self._transact(
            self.consent.functions.cancelSignaturesBySig(cancel.pseudonym, cancel.nonce, cancel.deadline, cancel.signature)
        )

    def relay_revoke(self, revoke: SignedRevoke) -> dict:
        return self._transact(self.consent.functions.revokeBySig(revoke.as_struct(), revoke.signature))

    def anchor_round(
        self, study_id: bytes, round_number: int, *, pinned_block: int, model_hash: bytes, commitments: dict[str, bytes]
    ) -> dict:
        hospitals = list(commitments)
        return self._transact(
            self.consortium.functions.anchorRound(
                study_id, round_number, pinned_block, model_hash, hospitals, [commitments[h] for h in hospitals]
            )
        )

    # ---- plumbing ----

    def _read(self, call):
        try:
            return call()
        except (ContractCustomError, ContractLogicError) as exc:
            raise self._rejected(exc) from exc
        except (requests.exceptions.RequestException, ProviderConnectionError, ConnectionError, TimeoutError) as exc:
            raise ChainUnavailable(f"the chain cannot be reached ({_transport_reason(exc)})") from exc
        except Web3RPCError as exc:
            raise LedgerError(f"the chain refused the request: {exc}") from exc
        except Exception as exc:
            # The in-process test chain (eth-tester) reports reverts as its own TransactionFailed.
            if type(exc).__name__ == "TransactionFailed":
                raise self._rejected(exc) from exc
            raise

    def _transact(self, fn) -> dict:
        if self._key is None:
            raise LedgerError("this ledger client is read-only: it has no account key")

        def send():
            tx = fn.build_transaction(
                {
                    "from": self.address,
                    "nonce": self.w3.eth.get_transaction_count(self.address, "pending"),
                    "chainId": self.deployment.chain_id,
                }
            )
            signed = Account.sign_transaction(tx, self._key)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout_s)

        try:
            receipt = self._read(send)
        except TimeExhausted as exc:
            raise ChainUnavailable(f"no receipt within {self.receipt_timeout_s} s: {exc}") from exc
        if receipt["status"] != 1:
            raise ContractRejected(f"the transaction {receipt['transactionHash'].hex()} reverted")
        return receipt

    def _rejected(self, exc: Exception) -> ContractRejected:
        data = getattr(exc, "data", None)
        if data is None and type(exc).__name__ == "TransactionFailed":
            text = str(exc.args[0]) if exc.args else ""
            raw = text.split("execution reverted: ", 1)[-1]
            if raw.startswith(("b'", 'b"')):
                data = "0x" + ast.literal_eval(raw).hex()
        if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
            decoded = self._errors.get(data[2:10])
            if decoded:
                name, types = decoded
                args = eth_abi.decode(types, bytes.fromhex(data[10:])) if types else ()
                shown = ["0x" + a.hex() if isinstance(a, bytes) else a for a in args]
                text = _ERROR_TEXT.get(name, name + " {}".format(shown)).format(*shown)
                return ContractRejected(text, error_name=name)
        return ContractRejected(f"the contract refused the call: {exc}")


class ConsentFollower:
    """Follows a study's consent events block by block: `poll()` returns what changed since the last poll."""

    def __init__(self, ledger: Ledger, study_id: bytes, *, from_block: int | None = None):
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


def _error_decoder(abis: dict) -> dict[str, tuple[str, list[str]]]:
    """Map each custom error's 4-byte selector (hex, no 0x) to its name and argument types."""
    decoder = {}
    for abi in abis.values():
        for entry in abi:
            if entry.get("type") == "error":
                types = [arg["type"] for arg in entry["inputs"]]
                selector = keccak(text=f"{entry['name']}({','.join(types)})")[:4].hex()
                decoder[selector] = (entry["name"], types)
    return decoder
