"""Training defaults in exactly one place.

The coordinator's run options, the round configuration it sends, the Flower app's run config
(pyproject.toml [tool.flwr.app.config], which Flower requires to list every key it may override: a test
checks it agrees with this module) and the demo read their defaults from here. The values come from the
tuning on a validation split (`benchmarks/tune_training.py`, docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TrainingDefaults:
    num_rounds: int = 10  # at most the study's rounds
    local_epochs: int = 3
    learning_rate: float = 1.0
    batch_size: int = 1024  # larger than any hospital: full batches
    max_grad_norm: float = 1.0
    strategy: str = "fedadam"  # or "fedavg", "fedyogi": Flower's server optimisers over the weighted average
    server_learning_rate: float = 0.1  # eta of FedAdam and FedYogi; unused by FedAvg
    min_nodes: int = 1

    def as_run_config(self) -> dict:
        """The same values under the Flower run config's hyphenated keys."""
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}


TRAINING = TrainingDefaults()
