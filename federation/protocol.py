"""The Flower messages between the coordinator and the hospital nodes: record names, keys, error codes."""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import ConfigRecord

from federation.defaults import TRAINING
from federation.ids import StudyId, hex0x

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
    """What the coordinator tells every node for one round; training values default to federation.defaults."""

    study_id: StudyId
    round: int
    block: int  # the pinned block: consent and study status are read at this block
    local_epochs: int = TRAINING.local_epochs
    learning_rate: float = TRAINING.learning_rate
    batch_size: int = TRAINING.batch_size
    max_grad_norm: float = TRAINING.max_grad_norm

    def __post_init__(self):
        object.__setattr__(self, "study_id", StudyId(self.study_id))

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
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"malformed round configuration: {exc}") from exc


def usage_record(*, hospital: str, account: str, commitment: bytes, used: int, phase: str) -> ConfigRecord:
    """A node's account of what it used in one phase of a round (training or evaluation)."""
    return ConfigRecord(
        {"hospital": hospital, "account": account, "commitment": hex0x(commitment), "used": used, "phase": phase}
    )


def identity_record(*, hospital: str, account: str, patients: int) -> ConfigRecord:
    return ConfigRecord({"hospital": hospital, "account": account, "patients": patients})


def __getattr__(name: str):
    # protocol.combined_commitment: the old name of federation.commitment's, imported on first use (keccak pulls
    # in eth_utils, which a message's ClientApp process need not pay for before it reaches the chain).
    if name == "combined_commitment":
        from federation.commitment import combined_commitment

        return combined_commitment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
