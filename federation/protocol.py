"""The Flower messages between the coordinator and the hospital nodes: record names, keys, error codes."""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from typing import Mapping

from flwr.app import ConfigRecord

from federation.defaults import TRAINING
from federation.ids import Digest, StudyId, from_hex0x, hex0x

# RecordDict entries
WEIGHTS = "arrays"
ROUND_CONFIG = "config"
METRICS = "metrics"
USAGE = "usage"
ROUND_REPLY = "round-reply"  # the RoundReply a node signed (train and evaluate replies)
REPLY_SIGNATURE = "reply-signature"  # key in the usage record: the hospital's EIP-712 signature over it

# Error codes a node replies with when it uses no data. The reason text says why, for people.
CHAIN_UNAVAILABLE = 4001
STUDY_NOT_ACCEPTED = 4002
CONSENT_UNCLEAR = 4003
BUDGET_SPENT = 4004
NO_CONSENTED_PATIENTS = 4005
RECORD_UNCLEAR = 4006
BAD_REQUEST = 4007
APP_NOT_APPROVED = 4010  # the SuperNode's app gate (node/app_gate.py) refused the run's app: not the study's
CHAIN_RESET = 4011  # the chain no longer holds the deployment (lost its contracts, or was reset and rebuilt)
PINNED_BLOCK_NOT_CANONICAL = 4012  # the pinned block's hash is not the chain's block at that number
# The node's privacy account shows less epsilon spent than the chain records for this hospital (Consortium
# spendingOf): its database was restored from an older backup, or replaced. Training would reopen spent budget.
BUDGET_BEHIND_CHAIN = 4013
STORE_UNAVAILABLE = 4014  # the node's database cannot be read or written (damaged, read-only, full disk)
HOSPITAL_KEY_MISSING = 4015  # the hospital's account key is not in the node home: it cannot sign or read the chain

# Flower's own error codes (flwr.common.constant.ErrorCode), as the coordinator reports them.
FLOWER_ERROR_NAMES = {
    0: "unknown Flower error",
    1: "the ClientApp could not be loaded",
    2: "the ClientApp raised an exception",
    3: "message unavailable",
    4: "reply unavailable",
    5: "node unavailable (stopped or lost its connection)",
    6: "a mod's precondition failed",
    7: "invalid app bundle",
    8: "the ClientApp crashed",
}

ERROR_NAMES = {**FLOWER_ERROR_NAMES,
    CHAIN_UNAVAILABLE: "chain unavailable",
    STUDY_NOT_ACCEPTED: "study not accepted",
    CONSENT_UNCLEAR: "consent unclear",
    BUDGET_SPENT: "privacy budget spent",
    NO_CONSENTED_PATIENTS: "no consented patients",
    RECORD_UNCLEAR: "record unclear",
    BAD_REQUEST: "bad request",
    APP_NOT_APPROVED: "app not approved",
    CHAIN_RESET: "chain reset",
    PINNED_BLOCK_NOT_CANONICAL: "pinned block not on the chain",
    BUDGET_BEHIND_CHAIN: "privacy account behind the chain",
    STORE_UNAVAILABLE: "node database unavailable",
    HOSPITAL_KEY_MISSING: "hospital key missing",
}


# A study whose on-chain epsilon budget is at least this is recorded as "no privacy" (a benchmark baseline):
# nodes that opted in (allow-non-private-studies) train it with plain SGD and report epsilon as infinity;
# other nodes refuse it. The contract rejects a budget of 0, so this is how such a study is recorded on chain.
NON_PRIVATE_EPSILON = 1e6


@dataclass(frozen=True)
class RoundConfig:
    """What the coordinator tells every node for one round; training values default to federation.defaults."""

    study_id: StudyId
    round: int
    block: int  # the pinned block: consent and study status are read at this block
    local_epochs: int = TRAINING.local_epochs
    learning_rate: float = TRAINING.learning_rate
    batch_size: int = TRAINING.batch_size
    max_grad_norm: float = TRAINING.max_grad_norm
    # The pinned block's hash (0x hex): a node refuses the round unless its chain has this block at `block`.
    # The coordinator always sends it; "" (a RoundConfig made in-process without one) skips that check.
    block_hash: str = ""

    def __post_init__(self):
        object.__setattr__(self, "study_id", StudyId(self.study_id))
        block_hash = str(self.block_hash).lower()
        if block_hash and (len(block_hash) != 66 or not block_hash.startswith("0x")
                           or any(c not in "0123456789abcdef" for c in block_hash[2:])):
            raise ValueError(f"the pinned block hash must be 0x and 64 hex digits, got {self.block_hash!r}")
        object.__setattr__(self, "block_hash", block_hash)

    def to_record(self) -> ConfigRecord:
        return ConfigRecord(
            {
                "study-id": str(self.study_id),
                "round": self.round,
                "block": self.block,
                "local-epochs": self.local_epochs,
                "learning-rate": self.learning_rate,
                "batch-size": self.batch_size,
                "max-grad-norm": self.max_grad_norm,
                "block-hash": self.block_hash,
            }
        )

    @classmethod
    def from_record(cls, record: ConfigRecord) -> "RoundConfig":
        try:
            return cls(
                study_id=StudyId.parse(record["study-id"]),
                round=int(record["round"]),
                block=int(record["block"]),
                local_epochs=int(record["local-epochs"]),
                learning_rate=float(record["learning-rate"]),
                batch_size=int(record["batch-size"]),
                max_grad_norm=float(record["max-grad-norm"]),
                block_hash=str(record.get("block-hash", "")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"malformed round configuration: {exc}") from exc


def usage_record(*, hospital: str, account: str, commitment: bytes, used: int, phase: str,
                 signature: bytes | None = None) -> ConfigRecord:
    """A node's account of what it used in one phase of a round (training or evaluation); with `signature`, the
    hospital's signature over the phase's RoundReply (the `account` here is a claim; the signature is proof)."""
    record = {"hospital": hospital, "account": account, "commitment": hex0x(commitment), "used": used, "phase": phase}
    if signature is not None:
        record[REPLY_SIGNATURE] = hex0x(signature)
    return ConfigRecord(record)


# The phases of a round as a signed reply numbers them.
PHASES = {"train": 1, "evaluate": 2}
# A non-private study's epsilon (infinity) as a signed reply records it: uint64's largest value.
EPSILON_MILLI_INFINITE = 2**64 - 1


def epsilon_milli(epsilon: float) -> int:
    """Epsilon spent, in thousandths, as a signed reply holds it (infinity: EPSILON_MILLI_INFINITE)."""
    epsilon = float(epsilon)
    if math.isinf(epsilon) and epsilon > 0:
        return EPSILON_MILLI_INFINITE
    if not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a non-negative number or infinity, got {epsilon!r}")
    return min(round(epsilon * 1000), EPSILON_MILLI_INFINITE - 1)


def metrics_digest(metrics: Mapping) -> Digest:
    """keccak-256 over an evaluation reply's metrics (the task's additive sums and counts), canonically: the
    `reply_digest` of an evaluate reply, so that a signature covers every number the coordinator adds up."""
    from eth_utils import keccak  # imported here: a ClientApp process pays for eth_utils only when it signs

    def plain(value):  # numpy scalars as the Python numbers they travel as
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return int(value) if isinstance(value, numbers.Integral) else float(value)

    canonical = json.dumps({str(k): plain(metrics[k]) for k in sorted(metrics)}, sort_keys=True,
                           separators=(",", ":"), allow_nan=True)
    return Digest(keccak(canonical.encode()))


@dataclass(frozen=True)
class RoundReply:
    """What a hospital signs about its reply in one phase of a round (EIP-712, contracts.ledger.signing):
    the round it answers (study, round, pinned block, phase), the model it received (`model_digest`, the model
    hash of the weights sent to it), what it sends back (`reply_digest`: the model hash of its trained weights,
    or `metrics_digest` of its evaluation metrics), how many examples it used, its commitment to the pseudonyms
    it used and the epsilon it has spent (thousandths)."""

    study_id: StudyId
    round: int
    pinned_block: int
    phase: str  # "train" or "evaluate"
    model_digest: Digest
    reply_digest: Digest
    num_examples: int
    commitment: Digest
    epsilon_milli: int

    def __post_init__(self):
        object.__setattr__(self, "study_id", StudyId(self.study_id))
        object.__setattr__(self, "model_digest", Digest(self.model_digest))
        object.__setattr__(self, "reply_digest", Digest(self.reply_digest))
        object.__setattr__(self, "commitment", Digest(self.commitment))
        if self.phase not in PHASES:
            raise ValueError(f"a reply's phase is 'train' or 'evaluate', got {self.phase!r}")
        for name, top in (("round", 2**32), ("pinned_block", 2**64), ("num_examples", 2**64),
                          ("epsilon_milli", 2**64)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < top:
                raise ValueError(f"a reply's {name} must be an integer in [0, {top}), got {value!r}")

    def as_dict(self) -> dict:
        """JSON-safe (the run report stores it): digests as 0x hex, every integer as a number."""
        return {"study-id": str(self.study_id), "round": self.round, "pinned-block": self.pinned_block,
                "phase": self.phase, "model-digest": str(self.model_digest), "reply-digest": str(self.reply_digest),
                "num-examples": self.num_examples, "commitment": str(self.commitment),
                "epsilon-milli": self.epsilon_milli}

    @classmethod
    def from_dict(cls, data: Mapping) -> "RoundReply":
        """Read `as_dict()`'s (or `to_record()`'s) form back; ValueError when anything is missing or malformed."""
        try:
            return cls(study_id=StudyId.parse(data["study-id"]), round=int(data["round"]),
                       pinned_block=int(data["pinned-block"]), phase=str(data["phase"]),
                       model_digest=Digest.parse(data["model-digest"]), reply_digest=Digest.parse(data["reply-digest"]),
                       num_examples=int(data["num-examples"]), commitment=Digest.parse(data["commitment"]),
                       epsilon_milli=int(data["epsilon-milli"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed round reply: {exc!r}") from exc

    def to_record(self) -> ConfigRecord:
        # A ConfigRecord's integers are signed 64-bit: the epsilon (uint64) travels as decimal text.
        return ConfigRecord({**self.as_dict(), "epsilon-milli": str(self.epsilon_milli)})

    @classmethod
    def from_record(cls, record: ConfigRecord) -> "RoundReply":
        return cls.from_dict(dict(record))

    def typed_message(self) -> dict:
        """The EIP-712 message (contracts.ledger.signing.ROUND_REPLY_TYPES)."""
        return {"studyId": bytes(self.study_id), "round": self.round, "pinnedBlock": self.pinned_block,
                "phase": PHASES[self.phase], "modelDigest": bytes(self.model_digest),
                "replyDigest": bytes(self.reply_digest), "numExamples": self.num_examples,
                "commitment": bytes(self.commitment), "epsilonMilli": self.epsilon_milli}


def reply_signature(usage: ConfigRecord) -> bytes | None:
    """The signature a usage record carries, None when it carries none or a malformed one."""
    try:
        return from_hex0x(str(usage[REPLY_SIGNATURE])) if REPLY_SIGNATURE in usage else None
    except ValueError:
        return None


def identity_record(*, hospital: str, account: str, patients: int, study_id: str | None = None,
                    epsilon_spent: float | None = None) -> ConfigRecord:
    """Who a node is; asked about a study (the coordinator does at the end of a run), also the epsilon its own
    privacy account says it spent on it (infinity: a non-private study it trained)."""
    record = {"hospital": hospital, "account": account, "patients": patients}
    if study_id is not None and epsilon_spent is not None:
        record.update({"study-id": str(study_id), "epsilon-spent": float(epsilon_spent)})
    return ConfigRecord(record)

