"""Hyperparameter tuning for the training benchmark on a validation split carved from the training data.

    .venv/bin/python -m deploy.tune_training

Each hospital's FLamby training set is split again, 75/25 stratified (random_state=7), into a tuning-train and
a validation part; features are standardised with the tuning-train statistics (as a node standardises with
its own training patients). The test sets are never read. Every variant gets a grid of the same kind and size
(learning rate, epochs or rounds x local epochs, batch or clipping norm), 3 seeds, and the setting with the
best mean pooled validation accuracy (ties: mean per-hospital validation accuracy) wins.

The federated variants are simulated in this process with the node's own training functions
(`node.trainer.train_plain` / `train_private`, the noise multiplier planned by the node's `PrivacyBudget`
rule) and the coordinator's aggregation (example-weighted average; FedAdam/FedYogi through Flower's
strategies): no chain, which keeps a grid of a few hundred runs to minutes. The benchmark itself then runs
the chosen settings through the real coordinator and ClientApp.
"""

from __future__ import annotations

import functools
import itertools
import logging
import json
import statistics
import sys
import warnings

import numpy as np
import torch

from deploy.bench_training import HospitalData, load_hospital_data
from federation.tasks.heart_disease import HeartDiseaseTask, standardiser

TASK = HeartDiseaseTask()
SEEDS = (0, 1, 2)


def validation_split(data: dict[str, HospitalData]) -> dict[str, HospitalData]:
    """Per hospital: tuning-train and validation from the training part only (test_x/test_y = validation)."""
    from sklearn.model_selection import train_test_split

    out = {}
    for name, d in data.items():
        # undo nothing: re-standardise on the tuning-train part (the training part was standardised on itself)
        idx = np.arange(len(d.train_y))
        tr, va = train_test_split(idx, test_size=0.25, stratify=d.train_y, random_state=7)
        mean, std = standardiser(d.train_x[tr])
        x = ((d.train_x - mean) / std).astype(np.float32)
        out[name] = HospitalData(x[tr], d.train_y[tr], x[va], d.train_y[va])
    return out


def score(state, data) -> tuple[float, float]:
    model = TASK.build_model()
    model.load_state_dict(state)
    model.eval()
    accs, correct, total = [], 0, 0
    with torch.no_grad():
        for d in data.values():
            hit = ((model(torch.from_numpy(d.test_x)).reshape(-1) > 0).numpy() == (d.test_y > 0.5))
            accs.append(float(hit.mean()))
            correct += int(hit.sum())
            total += len(hit)
    return correct / total, float(np.mean(accs))


def central(x, y, *, epochs, lr, batch, seed):
    from node.trainer import train_plain

    torch.manual_seed(seed)
    return train_plain(TASK.build_model(), TASK.loss, x, y, epochs=epochs, learning_rate=lr, batch_size=batch,
                       seed=seed).state


@functools.lru_cache(maxsize=None)
def _sigma(epsilon: float, rounds: int, steps: int, delta: float = 1e-5) -> float:
    from node.privacy import PrivacyBudget

    class NoSpends:
        def spends(self, study_id):
            return []

    budget = PrivacyBudget(NoSpends(), study_id="tune", epsilon_budget=epsilon, delta=delta)
    return budget.plan(sample_rate=1.0, steps_per_round=steps, rounds_left=rounds).noise_multiplier


def federated(data, *, rounds, epochs, lr, batch, seed, epsilon=None, clip=1.0, strategy="fedavg", eta=0.3,
              decay=1.0):
    """FedAvg / FedAdam / FedYogi as StudyRun aggregates, the node's training per hospital per round."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    from coordinator.study_run import RunOptions, make_strategy
    from federation import protocol
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    from node.trainer import train_plain, train_private

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    torch.manual_seed(seed)
    state = TASK.build_model().state_dict()
    strat = make_strategy(RunOptions(study_id=b"\0" * 32, num_rounds=rounds, strategy=strategy,
                                     server_learning_rate=eta))
    sigmas = {n: _sigma(epsilon, rounds, epochs) for n in data} if epsilon is not None else {}
    for r in range(1, rounds + 1):
        replies = []
        for node_id, (name, d) in enumerate(data.items(), start=1):
            model = TASK.build_model()
            model.load_state_dict(state)
            round_lr = lr * decay ** (r - 1)
            if epsilon is None:
                out = train_plain(model, TASK.loss, d.train_x, d.train_y, epochs=epochs, learning_rate=round_lr,
                                  batch_size=batch)
            else:
                out = train_private(model, TASK.loss, d.train_x, d.train_y, epochs=epochs, learning_rate=round_lr,
                                    batch_size=1024, max_grad_norm=clip, noise_multiplier=sigmas[name])
            content = RecordDict({protocol.WEIGHTS: ArrayRecord(out.state),
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


def _best(name, grid, run, data):
    results = []
    for params in grid:
        scores = [run(seed=seed, **params) for seed in SEEDS]
        pooled = statistics.fmean(s[0] for s in scores)
        mean = statistics.fmean(s[1] for s in scores)
        results.append((pooled, mean, params))
    results.sort(key=lambda t: (t[0], t[1]), reverse=True)
    best = results[0]
    print(f"{name}: {len(grid)} settings x {len(SEEDS)} seeds; best validation pooled {best[0]:.3f} mean "
          f"{best[1]:.3f}: {best[2]}", file=sys.stderr)
    return {"validation_pooled": round(best[0], 4), "validation_mean": round(best[1], 4), "params": best[2],
            "grid_size": len(grid)}


def _grid(**axes):
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def tune(epsilon: float = 3.0, *, extras: bool = True) -> dict:
    warnings.filterwarnings("ignore")
    logging.getLogger("flwr").setLevel(logging.WARNING)
    data = validation_split(load_hospital_data())
    pooled_x = np.concatenate([d.train_x for d in data.values()])
    pooled_y = np.concatenate([d.train_y for d in data.values()])
    out = {}

    central_grid = _grid(epochs=(5, 10, 20, 40), lr=(0.01, 0.03, 0.1, 0.3), batch=(8, 32, 1024))
    out["pooled"] = _best("pooled", central_grid,
                          lambda seed, **p: score(central(pooled_x, pooled_y, seed=seed, **p), data), data)

    def local(seed, **p):
        scores = [score(central(d.train_x, d.train_y, seed=seed, **p), data) for d in data.values()]
        return statistics.fmean(s[0] for s in scores), statistics.fmean(s[1] for s in scores)

    out["local"] = _best("local (mean over the four hospitals' models)", central_grid, local, data)

    fed_grid = _grid(rounds=(5,), epochs=(1, 2, 5), lr=(0.01, 0.03, 0.1, 0.3), batch=(8, 32, 1024))
    out["fedavg"] = _best("fedavg non-private", fed_grid,
                          lambda seed, **p: score(federated(data, seed=seed, **p), data), data)

    dp_grid = _grid(rounds=(5,), epochs=(1, 3, 5), lr=(0.3, 1.0, 3.0), clip=(0.25, 0.5, 1.0))
    out["fedavg_dp"] = _best(f"fedavg dp eps {epsilon:g}", dp_grid,
                             lambda seed, **p: score(federated(data, seed=seed, epsilon=epsilon, batch=1024, **p),
                                                     data), data)
    best_dp = out["fedavg_dp"]["params"]
    eta_grid = _grid(strategy=("fedadam", "fedyogi"), eta=(0.03, 0.1, 0.3, 1.0))
    out["adaptive_dp"] = _best(f"adaptive dp eps {epsilon:g}", eta_grid,
                               lambda seed, **p: score(federated(data, seed=seed, epsilon=epsilon, batch=1024,
                                                                 **best_dp, **p), data), data)
    if extras:  # item 3: more rounds and per-round learning-rate decay at the same epsilon
        extra_grid = _grid(rounds=(5, 10, 20), decay=(1.0, 0.9, 0.8))
        base = {k: v for k, v in best_dp.items() if k != "rounds"}
        out["fedavg_dp_rounds_decay"] = _best(
            f"fedavg dp eps {epsilon:g}, rounds x decay", extra_grid,
            lambda seed, **p: score(federated(data, seed=seed, epsilon=epsilon, batch=1024, **base, **p), data), data)
    return out


if __name__ == "__main__":
    print(json.dumps(tune()))
