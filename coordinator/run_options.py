"""How the coordinator runs a study: its options and Flower's server strategy of that name."""

from __future__ import annotations

from dataclasses import dataclass

from flwr.serverapp.strategy import FedAdam, FedAvg, FedYogi
from flwr.serverapp.strategy.fedopt import FedOpt

from federation import protocol
from federation.defaults import TRAINING
from federation.ids import StudyId


@dataclass
class RunOptions:
    """How the coordinator runs a study; training defaults from federation.defaults.TRAINING."""

    study_id: StudyId
    num_rounds: int = TRAINING.num_rounds  # at most the study's rounds
    local_epochs: int = TRAINING.local_epochs
    learning_rate: float = TRAINING.learning_rate
    batch_size: int = TRAINING.batch_size
    max_grad_norm: float = TRAINING.max_grad_norm
    round_timeout_s: float = 300.0
    min_nodes: int = TRAINING.min_nodes  # nodes a run waits for before round 1
    # Hospitals a later round needs (dead and hung nodes are not counted): fewer, and the run ends with a report
    # naming the hospitals missing (coordinator/node_set.py).
    round_min_nodes: int = 1
    wait_for_nodes_s: float = 120.0
    seed: int = 0
    strategy: str = TRAINING.strategy  # "fedavg", "fedadam" or "fedyogi"
    server_learning_rate: float = TRAINING.server_learning_rate  # eta of FedAdam and FedYogi; unused by FedAvg
    # Blocks between the chain's head and the block a round pins. The ServerApp passes the coordinator's setting
    # (coordinator/settings.py, default 2); 0 here, for runs built in-process on a chain that mines a block per
    # transaction (tests, benchmarks).
    confirmations: int = 0

    def __post_init__(self) -> None:
        self.study_id = StudyId(self.study_id)


STRATEGIES = {"fedavg": FedAvg, "fedadam": FedAdam, "fedyogi": FedYogi}


def make_strategy(options: RunOptions) -> FedAvg:
    """Flower's strategy of that name; only its aggregate_train is used (weighted by `num-examples`)."""
    try:
        strategy = STRATEGIES[options.strategy]
    except KeyError:
        raise ValueError(f"unknown strategy {options.strategy!r}; known: {', '.join(STRATEGIES)}") from None
    kwargs = {"eta": options.server_learning_rate} if issubclass(strategy, FedOpt) else {}
    return strategy(weighted_by_key="num-examples", arrayrecord_key=protocol.WEIGHTS, **kwargs)
