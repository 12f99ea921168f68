"""The Flower messages between the coordinator and the hospital nodes: record names, keys, error codes."""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import ConfigRecord

# RecordDict entries
WEIGHTS = "arrays"
ROUND_CONFIG = "config"
METRICS = "metrics"
USAGE = "usage"

# Error codes a node replies with when it uses no data. The reason text says why, for people.
CHAIN_UNAVAILABLE = 4001
STUDY_NOT_ACCEPTED = 4002
CONSENT_UNCLEAR = 4003
BUDGET_SPENT = 4004
NO_CONSENTED_PATIENTS = 4005
RECORD_UNCLEAR = 4006
BAD_REQUEST = 4007

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
}


# A study whose on-chain epsilon budget is at least this is recorded as "no privacy" (a benchmark baseline):
# nodes that opted in (allow-non-private-studies) train it with plain SGD and report epsilon as infinity;
# other nodes refuse it. The contract rejects a budget of 0, so this is how such a study is recorded on chain.
NON_PRIVATE_EPSILON = 1e6


@dataclass(frozen=True)
class RoundConfig:
    """What the coordinator tells every node for one round."""

    study_id: bytes
    round: int
    block: int  # the pinned block: consent and study status are read at this block
    local_epochs: int = 1
    learning_rate: float = 0.1
    batch_size: int = 32
    max_grad_norm: float = 1.0

    def to_record(self) -> ConfigRecord:
        return ConfigRecord(
            {
                "study-id": "0x" + self.study_id.hex(),
                "round": self.round,
                "block": self.block,
                "local-epochs": self.local_epochs,
                "learning-rate": self.learning_rate,
                "batch-size": self.batch_size,
                "max-grad-norm": self.max_grad_norm,
            }
        )

    @classmethod
    def from_record(cls, record: ConfigRecord) -> "RoundConfig":
        try:
            study_hex = str(record["study-id"])
            study_id = bytes.fromhex(study_hex.removeprefix("0x"))
            if len(study_id) != 32:
                raise ValueError("a study id has 32 bytes")
            return cls(
                study_id=study_id,
                round=int(record["round"]),
                block=int(record["block"]),
                local_epochs=int(record["local-epochs"]),
                learning_rate=float(record["learning-rate"]),
                batch_size=int(record["batch-size"]),
                max_grad_norm=float(record["max-grad-norm"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"malformed round configuration: {exc}") from exc


def usage_record(*, hospital: str, account: str, commitment: bytes, used: int, phase: str) -> ConfigRecord:
    """A node's account of what it used in one phase of a round (training or evaluation)."""
    return ConfigRecord(
        {"hospital": hospital, "account": account, "commitment": "0x" + commitment.hex(), "used": used, "phase": phase}
    )


def identity_record(*, hospital: str, account: str, patients: int) -> ConfigRecord:
    return ConfigRecord({"hospital": hospital, "account": account, "patients": patients})


def combined_commitment(train_commitment: bytes, evaluate_commitment: bytes) -> bytes:
    """The commitment a round anchor holds for a hospital: both phases of the round, in order."""
    from eth_utils import keccak

    return keccak(train_commitment + evaluate_commitment)
