"""The ledger client: reads and writes of the TwinLedger contracts as one account.

Reads take a ``block`` so that every consent question is asked at the block a round pinned; writes sign
locally with the caller's key and wait for the receipt. Every failure surfaces as a
:class:`~contracts.ledger.errors.LedgerError` that says what went wrong in the domain's words.
"""

from __future__ import annotations

import math
from pathlib import Path

import requests
from eth_account import Account
from web3 import Web3
from web3.exceptions import (
    BadFunctionCallOutput,
    BlockNotFound,
    ContractCustomError,
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    Web3RPCError,
)

from contracts.ledger.consent import ConsentCalls
from contracts.ledger.deployment import Deployment, connect
from contracts.ledger.errors import (
    ChainReset,
    ChainUnavailable,
    ContractRejected,
    LedgerError,
    StateUnavailable,
    error_decoder,
    rejection,
    transport_reason,
)
from contracts.ledger.governance import GovernanceCalls
from contracts.ledger.keys import load_key
from contracts.ledger.records import NodeKeyEvent, RoundAnchor, StudyTerms, from_bytes32, to_bytes32
from contracts.ledger.sending import send_transaction
from contracts.ledger.signing import sign_round_reply
from federation.ids import Digest, StudyId, from_hex0x
from federation.protocol import RoundReply

MILLI = 1000  # epsilon and delta travel on chain in thousandths
MICRO = 1_000_000  # a hospital's recorded privacy spending travels in millionths


def epsilon_micro(epsilon: float) -> int:
    """Epsilon in the chain's millionths, rounded down: what a node records never exceeds its own account, so its
    own account (the same float, the same rounding) is never below what it recorded."""
    return math.floor(epsilon * MICRO)


class Ledger(ConsentCalls, GovernanceCalls):
    """Reads and writes the TwinLedger contracts as one account (or read-only, without a key).

    `signer` is the key's own address, which sends the transactions; `address` is the account it acts as: for a
    hospital's current signer the hospital's registration address (its identity on chain, unchanged when its
    key rotates: `Consortium.hospitalOf`), for any other key its own address."""

    def __init__(self, w3: Web3, deployment: Deployment, *, account_key: str | None = None, receipt_timeout_s: float = 60):
        self.w3 = w3
        self.deployment = deployment
        self._key = account_key
        self.signer = Account.from_key(account_key).address if account_key else None
        self.address = self.signer
        self.receipt_timeout_s = receipt_timeout_s
        if w3.eth.chain_id != deployment.chain_id:
            raise LedgerError(
                f"the chain answers with chain id {w3.eth.chain_id}, the deployment is for {deployment.chain_id}"
            )
        self.consortium = w3.eth.contract(address=deployment.consortium, abi=deployment.abis["Consortium"])
        self.consent = w3.eth.contract(address=deployment.consent_registry, abi=deployment.abis["ConsentRegistry"])
        self._errors = error_decoder(deployment.abis)
        self.verify_chain()
        # A deployment from before hospitals could rotate their key has no hospitalOf: there a key acts as itself.
        if self.signer is not None and any(e.get("name") == "hospitalOf" for e in deployment.abis["Consortium"]):
            self.address = self.hospital_of(self.signer) or self.signer

    @classmethod
    def open(
        cls, rpc_url: str, deployment_path: Path, *, key_path: Path | None = None, key_role: str | None = None,
        timeout_s: float = 10.0, ca_file: Path | None = None, allow_plain_http: bool = False,
    ) -> "Ledger":
        deployment = Deployment.load(deployment_path)
        key = load_key(key_path, role=key_role) if key_path else None
        w3 = connect(rpc_url, timeout_s=timeout_s, ca_file=ca_file, allow_plain_http=allow_plain_http)
        return cls(w3, deployment, account_key=key)

    @classmethod
    def from_settings(cls, settings, *, key_file: Path | None = None, key_role: str | None = None) -> "Ledger":
        """The one way a component opens the ledger: from its settings' `rpc_url`, `deployment_file` and
        `chain_timeout_s` (and `chain_ca_file` / `allow_plain_rpc`, see `connect`), as `key_file`'s account
        (read-only without one)."""
        if not settings.deployment_file:
            raise ChainUnavailable("no deployment file is configured (deployment-file): run 'twinledger chain deploy'")
        return cls.open(settings.rpc_url, Path(settings.deployment_file), key_path=key_file, key_role=key_role,
                        timeout_s=settings.chain_timeout_s, ca_file=getattr(settings, "chain_ca_file", None),
                        allow_plain_http=getattr(settings, "allow_plain_rpc", False))

    # ---- the chain itself ----

    def verify_chain(self) -> None:
        """Raise ChainReset unless the chain still holds this deployment: code at both contracts' addresses and,
        when the deployment file recorded it, the same block at the deployment's block number."""
        reason = self._reset_reason()
        if reason:
            raise ChainReset(reason)

    def _reset_reason(self) -> str | None:
        d = self.deployment
        advice = ("it lost its contracts or was reset (a dev chain restarted without its state file?): restore the "
                  "chain's state, or deploy anew and give every component the new deployment file")
        for name, address in (("Consortium", d.consortium), ("ConsentRegistry", d.consent_registry)):
            if not self._read(lambda: self.w3.eth.get_code(address), checked=True):
                return f"the chain no longer holds the TwinLedger contracts (no {name} code at {address}): {advice}"
        if d.deployed_block_hash:
            try:
                block = self._read(lambda: self.w3.eth.get_block(d.deployed_block), checked=True)
            except ChainUnavailable:
                raise
            except LedgerError:  # no such block
                block = None
            found = "0x" + bytes(block["hash"]).hex() if block is not None else None
            if found is None:
                return (f"the chain no longer holds the TwinLedger contracts: it has no block {d.deployed_block}, "
                        f"where they were deployed: {advice}")
            if found != d.deployed_block_hash.lower():
                return (f"the chain no longer holds the TwinLedger contracts: its block {d.deployed_block} is another "
                        f"block than the one they were deployed in ({d.deployed_block_hash[:18]}...): {advice}")
        return None

    def _reset_or(self, error: LedgerError) -> LedgerError:
        """`error`, unless the chain was reset: then the ChainReset that explains it."""
        try:
            reason = self._reset_reason()
        except LedgerError:
            return error
        return ChainReset(reason) if reason else error

    # ---- reads ----

    def block_number(self) -> int:
        return self._read(lambda: self.w3.eth.block_number)

    def block_hash(self, block: int) -> str:
        """The hash (0x hex) of the chain's block at number `block`."""
        return "0x" + bytes(self._read(lambda: self.w3.eth.get_block(block))["hash"]).hex()

    def block_timestamp(self, block: int | str = "latest") -> int:
        return int(self._read(lambda: self.w3.eth.get_block(block)["timestamp"]))

    def head(self) -> tuple[int, int]:
        """(number, timestamp) of the latest block, from one read."""
        latest = self._read(lambda: self.w3.eth.get_block("latest"))
        return int(latest["number"]), int(latest["timestamp"])

    def study(self, study_id: bytes, *, block: int | str = "latest") -> StudyTerms:
        raw = self._read(lambda: self.consortium.functions.study(study_id).call(block_identifier=block))
        (purpose, task, categories, eps_milli, delta_exp, rounds, ends_at, _exists, suspended, _accepted,
         evaluation_percent, app) = raw
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
            app_digest=bytes(app),
            evaluation_share=evaluation_percent / 100,
        )

    def is_study_live_for(self, study_id: bytes, hospital: str, *, block: int | str = "latest") -> bool:
        return self._read(
            lambda: self.consortium.functions.isStudyLiveFor(study_id, hospital).call(block_identifier=block)
        )

    def is_active_hospital(self, account: str, *, block: int | str = "latest") -> bool:
        return self._read(lambda: self.consortium.functions.isActiveHospital(account).call(block_identifier=block))

    def node_key_of(self, account: str, *, block: int | str = "latest") -> bytes | None:
        """The 65-byte P-256 point `account` recorded as its SuperNode's key; None when it set none (or is no
        hospital). `node.node_keys` / `coordinator.admission.pem_from_chain_key` turn it into Flower's PEM."""
        record = self._read(lambda: self.consortium.functions.hospital(account).call(block_identifier=block))
        return bytes(record[3]) or None

    def node_id_of(self, account: str, *, block: int | str = "latest") -> Digest | None:
        """The fingerprint (sha256 of DER SPKI) of `account`'s node key; None before it sets one."""
        record = self._read(lambda: self.consortium.functions.hospital(account).call(block_identifier=block))
        return Digest(record[0]) if record[3] else None

    def hospital_by_node_id(self, node_id: bytes, *, block: int | str = "latest") -> str | None:
        """The hospital whose node key has fingerprint `node_id` (= node_keys.key_fingerprint of the PEM Flower
        reports for a node), None when no hospital holds that key. A suspended hospital still holds its key:
        ask `is_active_hospital` too."""
        try:
            return self._read(
                lambda: self.consortium.functions.hospitalByNodeId(node_id).call(block_identifier=block)
            )
        except ContractRejected as exc:
            if exc.error_name == "UnknownNodeKey":
                return None
            raise

    def node_key_events(self, *, from_block: int | None = None, to_block: int | str = "latest") -> list[NodeKeyEvent]:
        """NodeKeySet and HospitalSuspensionChanged events in chain order: what the admission syncer follows."""
        start = self.deployment.deployed_block if from_block is None else from_block
        found = []
        for log in self._read(lambda: self.consortium.events.NodeKeySet.get_logs(from_block=start, to_block=to_block)):
            args = log["args"]
            found.append((log["blockNumber"], log["logIndex"], NodeKeyEvent(
                "node-key", args["account"], log["blockNumber"], bytes(args["nodeKey"]), Digest(args["nodeId"]))))
        for log in self._read(
            lambda: self.consortium.events.HospitalSuspensionChanged.get_logs(from_block=start, to_block=to_block)
        ):
            kind = "suspended" if log["args"]["suspended"] else "reinstated"
            found.append((log["blockNumber"], log["logIndex"], NodeKeyEvent(kind, log["args"]["account"], log["blockNumber"])))
        return [event for _, _, event in sorted(found, key=lambda f: (f[0], f[1]))]

    def accepted_studies(self, hospital: str) -> list[StudyId]:
        """The studies `hospital` accepted, from the StudyAccepted events, in the order it accepted them."""
        logs = self._read(
            lambda: self.consortium.events.StudyAccepted.get_logs(
                from_block=self.deployment.deployed_block, argument_filters={"hospital": hospital}
            )
        )
        seen: list[StudyId] = []
        for log in sorted(logs, key=lambda entry: (entry["blockNumber"], entry["logIndex"])):
            study = StudyId(log["args"]["studyId"])
            if study not in seen:
                seen.append(study)
        return seen

    def anchor_of(self, study_id: bytes, round_number: int) -> Digest | None:
        """The model hash anchored for a round (zero bytes are possible), or None if the round is not anchored yet."""
        if not self._read(lambda: self.consortium.functions.isAnchored(study_id, round_number).call()):
            return None
        return Digest(self._read(lambda: self.consortium.functions.anchorOf(study_id, round_number).call()))

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
                    study_id=StudyId(args["studyId"]),
                    round=args["round"],
                    pinned_block=args["pinnedBlock"],
                    model_hash=Digest(args["modelHash"]),
                    commitments={h: Digest(c) for h, c in zip(args["hospitals"], args["commitments"])},
                    anchored_block=log["blockNumber"],
                )
            )
        return sorted(anchors, key=lambda a: a.round)

    def spending_of(self, study_id: bytes, hospital: str, *, block: int | str = "latest") -> int:
        """The epsilon (millionths) `hospital` recorded as spent on `study_id` at `block`; 0 if none."""
        return self._read(
            lambda: self.consortium.functions.spendingOf(study_id, hospital).call(block_identifier=block))

    # ---- signatures (off chain) ----

    def sign_round_reply(self, reply: RoundReply) -> bytes:
        """This hospital's EIP-712 signature over its reply in one phase of a round (no transaction)."""
        if self._key is None:
            raise LedgerError("this ledger client is read-only: it has no account key to sign with")
        return sign_round_reply(self._key, self.deployment, reply)

    # ---- writes ----

    def register_hospital(self, account: str, node_id: bytes) -> dict:
        return self._transact(self.consortium.functions.registerHospital(account, node_id))

    def set_node_key(self, node_key: bytes) -> dict:
        """Record this hospital's SuperNode key (`node_keys.chain_node_key`, 65 bytes); calling again rotates it."""
        return self._transact(self.consortium.functions.setNodeKey(bytes(node_key)))

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
        app_digest: bytes | str | None = None,
    ) -> dict:
        """Propose a study; with `app_digest` (the app's FAB SHA-256, bytes or hex) also record the app it runs
        (a second transaction, whose receipt is returned)."""
        receipt = self._transact(
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
        if app_digest is not None:
            receipt = self.set_study_app(study_id, app_digest)
        return receipt

    def set_study_evaluation_share(self, study_id: bytes, *, percent: int) -> dict:
        """Set the percent (1..99) of the study's epsilon budget its evaluation releases may spend together;
        refused (StudyAppLocked) once a hospital accepted the study."""
        return self._transact(self.consortium.functions.setStudyEvaluationShare(study_id, percent))

    def set_study_app(self, study_id: bytes, app_digest: bytes | str) -> dict:
        """Record the app a study runs: the SHA-256 of its FAB (bytes, or hex as Flower prints `fab_hash`);
        refused (StudyAppLocked) once a hospital accepted the study."""
        digest = from_hex0x(app_digest) if isinstance(app_digest, str) else bytes(app_digest)
        return self._transact(self.consortium.functions.setStudyApp(study_id, digest))

    def accept_study(self, study_id: bytes) -> dict:
        return self._transact(self.consortium.functions.acceptStudy(study_id))

    def anchor_round(
        self, study_id: bytes, round_number: int, *, pinned_block: int, model_hash: bytes, commitments: dict[str, bytes]
    ) -> dict:
        hospitals = list(commitments)
        return self._transact(
            self.consortium.functions.anchorRound(
                study_id, round_number, pinned_block, model_hash, hospitals, [commitments[h] for h in hospitals]
            )
        )

    def record_spending(self, study_id: bytes, epsilon: float) -> dict:
        """Record, as this hospital, the epsilon its node has spent on `study_id` so far (rounded down to
        millionths); a value below the recorded one is refused (ContractRejected SpendingDecreased)."""
        return self._transact(self.consortium.functions.recordSpending(study_id, epsilon_micro(epsilon)))

    # ---- plumbing ----

    def _read(self, call, *, checked: bool = False):
        """`call()`, its failures as LedgerErrors. An answer that only a reset chain gives (an empty call result,
        a block out of range) is checked against the deployment, unless `checked` (the check's own reads)."""
        try:
            return call()
        except (ContractCustomError, ContractLogicError) as exc:
            raise self._rejected(exc) from exc
        except (requests.exceptions.RequestException, ProviderConnectionError, ConnectionError, TimeoutError) as exc:
            raise ChainUnavailable(f"the chain cannot be reached ({transport_reason(exc)})") from exc
        except BlockNotFound as exc:
            raise LedgerError(f"the chain has no such block ({exc})") from exc
        except BadFunctionCallOutput as exc:
            error = LedgerError(f"the contract's answer does not decode: {exc}")
            raise (error if checked else self._reset_or(error)) from exc
        except Web3RPCError as exc:
            if "BlockOutOfRange" in str(exc) or "block not found" in str(exc).lower():
                error = StateUnavailable(f"the chain node does not serve the state at the block asked ({exc}); a "
                                         "chain restarted from its state file keeps no earlier states")
                raise (error if checked else self._reset_or(error)) from exc
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
            return send_transaction(self.w3, fn, signer=self.signer, key=self._key, chain_id=self.deployment.chain_id,
                                    receipt_timeout_s=self.receipt_timeout_s)

        try:
            receipt = self._read(send)
        except TimeExhausted as exc:
            raise ChainUnavailable(f"no receipt within {self.receipt_timeout_s} s: {exc}") from exc
        if receipt["status"] != 1:
            raise ContractRejected(f"the transaction {receipt['transactionHash'].hex()} reverted")
        return receipt

    def _rejected(self, exc: Exception) -> ContractRejected:
        return rejection(exc, self._errors)
