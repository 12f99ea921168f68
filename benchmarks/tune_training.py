"""Hyperparameter tuning for the training benchmark on a validation split carved from the training data.

    .venv/bin/python -m benchmarks.tune_training [pooled] [local] [fedavg] [dp]

Each hospital's FLamby training set is split again, 75/25 stratified (random_state=7), into a tuning-train and
a validation part. The validation metrics are the benchmark's own (`benchmarks.flamby.evaluate_model`),
with the tuning-train part in the role of the training data: each hospital's validation part standardised
with its own tuning-train statistics, and the pooled validation set with the pooled tuning-train statistics
(FLamby's convention). The test sets are never read.

Every variant gets the same effort: a grid of 24 settings, 3 seeds each, and the setting with the best
validation score wins; the score is the mean over seeds of (pooled accuracy + mean per-hospital accuracy) / 2,
since the benchmark's targets are on both. The adaptive server optimiser's grid is FedAdam and FedYogi at four
server learning rates on the three best FedAvg DP-SGD client settings (24 as well).

The federated variants are simulated in this process with the node's own functions (`node.trainer.train_private`,
`steps_per_epoch` and the noise multiplier planned by the node's `PrivacyBudget`) and the
coordinator's aggregation (`coordinator.study_run.make_strategy`); plain SGD is `train_plain`'s algorithm
without its DataLoader (`benchmarks.flamby.plain_sgd`, as the benchmark's baselines). No chain: that keeps
the grids to minutes (about 20 minutes a variant on two busy cores).
The benchmark itself then runs the chosen settings through the real coordinator and ClientApp.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from .flamby import (HospitalData, evaluate_model, hospital_data, load_hospital_data, plain_sgd,
                               pooled_set)
from federation.tasks.heart_disease import HeartDiseaseTask

TASK = HeartDiseaseTask()
SEEDS = (0, 1, 2)


def validation_split(data: dict[str, HospitalData]) -> dict[str, HospitalData]:
    """Per hospital: tuning-train and validation from the training part only (test_* = validation)."""
    from sklearn.model_selection import train_test_split

    out = {}
    for name, d in data.items():
        counts = np.bincount(d.train_y.astype(int), minlength=2)
        stratify = d.train_y if counts.min() > 2 else None  # Switzerland's training patients are all positive
        tr, va = train_test_split(np.arange(len(d.train_y)), test_size=0.25, stratify=stratify, random_state=7)
        out[name] = hospital_data(d.raw_train_x[tr], d.train_y[tr], d.raw_train_x[va], d.train_y[va])
    return out


def score(state, data) -> tuple[float, float]:
    """(pooled validation accuracy, mean per-hospital validation accuracy)."""
    metrics = evaluate_model(state, data)
    return metrics["pooled_accuracy"], metrics["mean_accuracy"]


def central(x, y, *, epochs, lr, batch, seed):
    torch.manual_seed(seed)
    return plain_sgd(TASK.build_model(), x, y, epochs=epochs, lr=lr, batch=batch, seed=seed)


@functools.lru_cache(maxsize=None)
def noise_multiplier(epsilon: float, *, examples: int, batch: int, epochs: int, rounds: int,
                     delta: float = 1e-5) -> float:
    """What the node plans for round 1 of a study of `rounds` rounds (node.service.HospitalNode.train)."""
    from node.privacy import PrivacyBudget
    from node.trainer import steps_per_epoch

    class NoSpends:
        def spends(self, study_id):
            return []

    sample_rate, steps = steps_per_epoch(examples, batch)
    budget = PrivacyBudget(NoSpends(), study_id="tune", epsilon_budget=epsilon, delta=delta)
    return budget.plan(sample_rate=sample_rate, steps_per_round=steps * epochs, rounds_left=rounds).noise_multiplier


def federated(data, *, rounds, epochs, lr, batch, seed, epsilon=None, clip=1.0, strategy="fedavg", eta=0.3):
    """FedAvg / FedAdam / FedYogi as StudyRun aggregates, the node's training per hospital per round."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    from coordinator.run_options import RunOptions, make_strategy
    from federation import protocol
    from node.trainer import train_private

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    torch.manual_seed(seed)
    state = TASK.build_model().state_dict()
    strat = make_strategy(RunOptions(study_id=b"\0" * 32, num_rounds=rounds, strategy=strategy,
                                     server_learning_rate=eta))
    for r in range(1, rounds + 1):
        replies = []
        for node_id, d in enumerate(data.values(), start=1):
            model = TASK.build_model()
            model.load_state_dict(state)
            if epsilon is None:
                weights = plain_sgd(model, d.train_x, d.train_y, epochs=epochs, lr=lr, batch=batch)
            else:
                sigma = noise_multiplier(epsilon, examples=len(d.train_y), batch=batch, epochs=epochs, rounds=rounds)
                weights = train_private(model, TASK.loss, d.train_x, d.train_y, epochs=epochs, learning_rate=lr,
                                        batch_size=batch, max_grad_norm=clip, noise_multiplier=sigma).state
            content = RecordDict({protocol.WEIGHTS: ArrayRecord(weights),
                                  protocol.METRICS: MetricRecord({"num-examples": len(d.train_y)})})
            reply = Message(content, dst_node_id=node_id, message_type="train")
            reply.metadata.__dict__["_src_node_id"] = node_id
            replies.append(reply)
        if strategy != "fedavg":
            strat.current_arrays = {k: v.detach().numpy() for k, v in state.items()}
        new, _ = strat.aggregate_train(r, replies)
        model = TASK.build_model()
        model.load_state_dict(new.to_torch_state_dict())
        state = model.state_dict()
    return state


def _ranked(name, grid, run):
    started = time.monotonic()
    results = []
    for params in grid:
        scores = [run(seed=seed, **params) for seed in SEEDS]
        pooled = statistics.fmean(s[0] for s in scores)
        mean = statistics.fmean(s[1] for s in scores)
        results.append(((pooled + mean) / 2, pooled, mean, params))
    results.sort(key=lambda t: t[:3], reverse=True)
    best = results[0]
    print(f"{name}: {len(grid)} settings x {len(SEEDS)} seeds in {time.monotonic() - started:.0f} s; best "
          f"validation pooled {best[1]:.3f} mean {best[2]:.3f}: {best[3]}", file=sys.stderr)
    return results


def _summary(results) -> dict:
    score_, pooled, mean, params = results[0]
    return {"validation_score": round(score_, 4), "validation_pooled": round(pooled, 4),
            "validation_mean": round(mean, 4), "params": params, "grid_size": len(results),
            "runner_up": [{"score": round(r[0], 4), "params": r[3]} for r in results[1:4]]}


def _grid(**axes):
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def tune(epsilon: float = 3.0, *, variants: tuple[str, ...] = ("pooled", "local", "fedavg", "dp")) -> dict:
    warnings.filterwarnings("ignore")
    logging.getLogger("flwr").setLevel(logging.WARNING)
    data = validation_split(load_hospital_data())
    pooled_x, pooled_y = pooled_set(data, "train")
    out = {}

    central_grid = _grid(epochs=(10, 50), lr=(0.003, 0.01, 0.03, 0.1), batch=(4, 16, 1024))
    if "pooled" in variants:
        out["pooled"] = _summary(_ranked(
            "pooled", central_grid, lambda seed, **p: score(central(pooled_x, pooled_y, seed=seed, **p), data)))

    def local(seed, **p):
        scores = [score(central(d.train_x, d.train_y, seed=seed, **p), data) for d in data.values()]
        return statistics.fmean(s[0] for s in scores), statistics.fmean(s[1] for s in scores)

    if "local" in variants:
        out["local"] = _summary(_ranked("local (mean over the four hospitals' models)", central_grid, local))

    if "fedavg" in variants:
        fed_grid = _grid(rounds=(5, 15), epochs=(1, 5), lr=(0.01, 0.03, 0.1), batch=(4, 1024))
        out["fedavg"] = _summary(_ranked(
            "fedavg non-private", fed_grid, lambda seed, **p: score(federated(data, seed=seed, **p), data)))

    if "dp" in variants:
        # Expected batch 16 is Poisson subsampling at every hospital but Switzerland (22 tuning patients);
        # 1024 is full batches.
        dp_grid = _grid(rounds=(5, 10), epochs=(1, 3), lr=(0.3, 1.0, 3.0), clip=(1.0,), batch=(16, 1024))
        dp = _ranked(f"fedavg dp eps {epsilon:g}", dp_grid,
                     lambda seed, **p: score(federated(data, seed=seed, epsilon=epsilon, **p), data))
        out["fedavg_dp"] = _summary(dp)
        best_subsampled = next(r for r in dp if r[3]["batch"] < 1024)
        out["fedavg_dp_best_subsampled"] = {"validation_score": round(best_subsampled[0], 4),
                                            "params": best_subsampled[3]}
        adaptive_grid = [dict(r[3], strategy=s, eta=eta) for r in dp[:3]
                         for s in ("fedadam", "fedyogi") for eta in (0.03, 0.1, 0.3, 1.0)]
        out["adaptive_dp"] = _summary(_ranked(
            f"adaptive dp eps {epsilon:g}", adaptive_grid,
            lambda seed, **p: score(federated(data, seed=seed, epsilon=epsilon, **p), data)))
    return out


if __name__ == "__main__":
    chosen = tuple(a for a in sys.argv[1:] if not a.startswith("-")) or ("pooled", "local", "fedavg", "dp")
    print(json.dumps(tune(variants=chosen)))
