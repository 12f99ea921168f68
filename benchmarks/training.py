"""Training benchmark on FLamby's Fed-Heart-Disease: local, pooled, FedAvg and FedAdam/FedYogi, with and
without DP-SGD, in one harness and one run.

    twinledger bench training --json

What runs where:
- **Federated variants** (FedAvg without privacy; FedAvg and FedAdam or FedYogi with DP-SGD at each epsilon)
  run the code users run: the coordinator's `StudyRun` (the ServerApp's logic) drives the four hospitals'
  real ClientApp (`node.client_app.app`, hence `node.service.HospitalNode`) on a real chain (anvil) with
  the contracts deployed, every patient enrolled and consenting to each study, the consent gate reading
  the chain at each round's pinned block, the nodes' privacy budgets, and every round anchored on chain.
  Each run is a study of its own (a study's rounds run once; its privacy budget is per study).
- **The transport is in-process** (`benchmarks/grid.py`): each Flower message is serialised to Flower's
  wire format and back, then handed straight to the ClientApp object in this process. Flower's deployment
  engine starts a fresh process per message (about 25 s a round here), far too slow for the ~35 runs of
  this benchmark; what the benchmark measures (the model, the privacy spending) does not depend on it.
- **Non-private federated runs** are studies recorded on chain with epsilon budget
  `federation.protocol.NON_PRIVATE_EPSILON` (1e6); the benchmark's nodes opt in with
  `allow-non-private-studies`, train with plain SGD and report epsilon as infinity.
- **Local and pooled baselines** are not federated: they train the same model with plain mini-batch SGD
  (`plain_sgd`, the algorithm of `node.trainer.train_plain`) on the same FLamby split in this process; a local
  baseline standardises with its hospital's training statistics, the pooled baseline with the pooled ones
  (FLamby's `pooled=True`). *Pooled (FLamby's recipe)* is FLamby's own pooled baseline, to show that this
  harness reproduces FLamby's figures.
- **Metrics** come from the final global model, evaluated here (the benchmark holds the data) exactly as
  FLamby's benchmark evaluates: the mean of per-hospital test accuracies (each test set standardised with its
  hospital's training statistics), and accuracy and AUC on the pooled test set standardised with the pooled
  training statistics. The union of the per-hospital standardised test sets (`*_nodes`) is what the nodes
  compute; it is checked against the coordinator's last-round accuracy.
- **Privacy cross-check**: for every DP run, each hospital's epsilon is recomputed from the (noise
  multiplier, sample rate, steps) its node logged (`node.store.PrivacySpend`) with Google's
  `dp-accounting` RDP accountant, independent of Opacus's, and compared with what the node reported. When
  the headline runs use full batches, one extra run with Poisson subsampling (expected batch
  `crosscheck_batch_size`) makes sure the comparison also covers subsampled training.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from .flamby import (HospitalData, TrainingSettings, evaluate_model, load_hospital_data, pooled_set,
                               train_centrally, train_flamby_recipe)
from .grid import InProcessGrid
from .training_page import table_lines, write_benchmarks_page
from contracts import ledger as lg
from coordinator.run_options import RunOptions
from coordinator.study_run import StudyRun
from deploy.consortium import Consortium, chain_url
from deploy.demo import DATA_DIR, HOSPITALS
from federation import protocol
from federation.ids import StudyId
from federation.tasks.heart_disease import HeartDiseaseTask
from node.store import Store

log = logging.getLogger("twinledger.bench")


# ---- the federation: chain, contracts, four nodes, patients ----


def heart_disease_consortium(workdir: Path, rpc_url: str) -> Consortium:
    """The contracts and a coordinator; four nodes (opted in to non-private studies) with their records, the
    patients with complete records enrolled: only they can be used by any task, so only they are asked."""
    consortium = Consortium.deploy(lg.connect(rpc_url), rpc_url=rpc_url, deployment_file=workdir / "deployment.json",
                                   operator_key_file=workdir / "operator.key")
    consortium.add_coordinator(key_file=workdir / "coordinator.key")
    for name, filename in HOSPITALS.items():
        node = consortium.add_node(name, workdir / "nodes" / name, records=[DATA_DIR / filename],
                                   allow_non_private_studies=True)
        store = Store(node.settings.resolved_database_url)
        node.enrol([p.record_number for p in store.patients() if p.cohort != "incomplete"])
    return consortium


def new_study(consortium: Consortium, *, epsilon: float, rounds: int, delta_exponent: int = 5) -> StudyId:
    """A study every hospital accepts and every enrolled patient consents to."""
    return consortium.open_study(epsilon_budget=epsilon, rounds=rounds, delta_exponent=delta_exponent)


def recompute_epsilon(store: Store, study_hex: str, delta: float) -> float:
    """Epsilon of the logged DP-SGD steps by Google's dp-accounting RDP accountant (not Opacus's)."""
    from dp_accounting import dp_event
    from dp_accounting.rdp import rdp_privacy_accountant

    logging.getLogger("absl").setLevel(logging.ERROR)
    accountant = rdp_privacy_accountant.RdpAccountant()
    for spend in store.spends(study_hex):
        event = dp_event.PoissonSampledDpEvent(spend.sample_rate, dp_event.GaussianDpEvent(spend.noise_multiplier))
        accountant.compose(dp_event.SelfComposedDpEvent(event, spend.steps))
    return float(accountant.get_epsilon(delta))


def federated_run(consortium: Consortium, workdir: Path, *, strategy: str, epsilon: float | None, seed: int,
                  settings: TrainingSettings, data: dict[str, HospitalData]) -> dict:
    """One study, run by the coordinator's StudyRun over the in-process grid; epsilon None = non-private."""
    private = epsilon is not None
    rounds = settings.dp_rounds if private else settings.rounds
    study_id = new_study(consortium, epsilon=epsilon if private else protocol.NON_PRIVATE_EPSILON, rounds=rounds,
                         delta_exponent=settings.delta_exponent)
    nodes = {name: node.settings for name, node in consortium.nodes.items()}
    options = RunOptions(
        study_id=study_id, num_rounds=rounds,
        local_epochs=settings.dp_local_epochs if private else settings.local_epochs,
        learning_rate=settings.dp_learning_rate if private else settings.learning_rate,
        batch_size=settings.dp_batch_size if private else settings.batch_size,
        max_grad_norm=settings.dp_max_grad_norm, min_nodes=len(nodes), wait_for_nodes_s=0, seed=seed,
        strategy=strategy, server_learning_rate=settings.server_learning_rate,
    )
    grid = InProcessGrid({i: s.home for i, s in enumerate(nodes.values(), start=1)})
    run = StudyRun(grid, consortium.coordinator, options, workdir / "runs" / str(study_id)[:14])
    torch.manual_seed(seed)  # the nodes' sampling and noise draw from this process's generator
    arrays = run.run()
    report = run.report
    errors = {r.round: r.errors for r in report.rounds if r.errors}
    if errors:
        raise RuntimeError(f"{strategy} run (epsilon {epsilon}) had errors: {errors}")
    # The nodes normalise with the task's declared public ranges (issue 13): evaluate as they do.
    result = evaluate_model(arrays.to_torch_state_dict(), data, normaliser=HeartDiseaseTask().normaliser(None))
    result["coordinator_accuracy"] = report.rounds[-1].value("accuracy")
    # Every node reported its own training wall time, and the coordinator recorded it per round.
    result["train_seconds_recorded"] = all(
        set(r.train_seconds) == set(nodes) and all(v >= 0 for v in r.train_seconds.values()) for r in report.rounds
    )
    if private:
        study_hex = str(study_id)
        delta = 10.0 ** -settings.delta_exponent
        result["epsilon_reported"] = {h.name: h.epsilon_spent for h in report.hospitals}
        result["epsilon_recomputed"] = {
            name: recompute_epsilon(Store(s.resolved_database_url), study_hex, delta) for name, s in nodes.items()
        }
        result["sample_rates"] = {
            name: min(spend.sample_rate for spend in Store(s.resolved_database_url).spends(study_hex))
            for name, s in nodes.items()
        }
    return result


# ---- the benchmark ----


def _summary(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}


def bench_training(
    *,
    seeds: int = 5,
    epsilons: tuple[float, ...] = (1.0, 3.0, 8.0),
    rounds: int | None = None,
    settings: TrainingSettings | None = None,
    write_docs: bool = True,
    rpc_url: str | None = None,
) -> dict:
    """Every variant, `seeds` times; returns the table and the headline figures (see the module docstring)."""
    started = time.monotonic()
    settings = settings or TrainingSettings()
    if rounds is not None:
        settings = dataclasses.replace(settings, rounds=rounds, dp_rounds=rounds)
    data = load_hospital_data()
    largest = max(len(d.train_y) for d in data.values())
    runs: dict[str, list[dict]] = {}
    checks = {"epsilon_reported": [], "epsilon_recomputed": [], "epsilon_subsampled": [],
              "coordinator_accuracy_mismatches": 0, "train_seconds_missing": 0}
    with tempfile.TemporaryDirectory(prefix="twinledger-bench-") as scratch, \
            chain_url(rpc_url, log_path=Path(scratch) / "anvil.log") as url:
        workdir = Path(scratch)
        consortium = heart_disease_consortium(workdir, url)
        log.info("federation set up in %.1f s", time.monotonic() - started)
        # FLamby's pooled baseline standardises with the pooled training statistics.
        pooled_x, pooled_y = pooled_set(data, "train")
        for seed in range(seeds):
            for name, d in data.items():
                state = train_centrally(d.train_x, d.train_y, settings, seed, pooled=False)
                runs.setdefault(f"local:{name}", []).append(evaluate_model(state, data))
            pooled_state = train_centrally(pooled_x, pooled_y, settings, seed)
            runs.setdefault("pooled", []).append(evaluate_model(pooled_state, data))
            runs.setdefault("pooled (FLamby's recipe)", []).append(
                evaluate_model(train_flamby_recipe(pooled_x, pooled_y, seed), data))
            variants = [("fedavg", "fedavg", None, settings)] + [
                (f"{strategy}+dp:{eps:g}", strategy, eps, settings)
                for eps in epsilons for strategy in ("fedavg", settings.adaptive_strategy)
            ]
            if settings.dp_batch_size >= largest and seed == 0:
                # The headline DP runs use full batches (sample rate 1): one run with Poisson subsampling
                # too, so that the accountants are also compared where subsampling amplifies privacy.
                subsampled = dataclasses.replace(settings, dp_batch_size=settings.crosscheck_batch_size)
                variants.append((f"fedavg, expected batch {subsampled.dp_batch_size}+dp:{epsilons[-1]:g}",
                                 "fedavg", epsilons[-1], subsampled))
            for key, strategy, eps, variant_settings in variants:
                t0 = time.monotonic()
                result = federated_run(consortium, workdir, strategy=strategy, epsilon=eps, seed=seed,
                                       settings=variant_settings, data=data)
                runs.setdefault(key, []).append(result)
                # The coordinator's accuracy is what the nodes computed. Exact only without privacy: with it, the
                # nodes' sums are a noisy, charged release (docs/privacy.md), compared with nothing.
                if eps is None and (result["coordinator_accuracy"] is None
                                    or abs(result["coordinator_accuracy"] - result["pooled_accuracy_nodes"]) > 1e-9):
                    checks["coordinator_accuracy_mismatches"] += 1
                if not result["train_seconds_recorded"]:
                    checks["train_seconds_missing"] += 1
                if eps is not None:
                    reported = [result["epsilon_reported"][h] for h in sorted(data)]
                    recomputed = [result["epsilon_recomputed"][h] for h in sorted(data)]
                    checks["epsilon_reported"] += reported
                    checks["epsilon_recomputed"] += recomputed
                    rates = result["sample_rates"]
                    checks["epsilon_subsampled"] += [
                        (a, b) for h, a, b in zip(sorted(data), reported, recomputed) if rates[h] < 1.0
                    ]
                log.info("seed %d %s: mean %.3f pooled %.3f auc %.3f (%.1f s)", seed, key, result["mean_accuracy"],
                         result["pooled_accuracy"], result["pooled_auc"], time.monotonic() - t0)

    table = []
    for key, results in runs.items():
        method, _, epsilon = key.partition("+dp:")
        table.append({
            "method": method,
            "epsilon": float(epsilon) if epsilon else None,
            "runs": len(results),
            **{metric: _summary([r[metric] for r in results])
               for metric in ("mean_accuracy", "pooled_accuracy", "pooled_auc", "pooled_accuracy_nodes",
                              "pooled_auc_nodes")},
        })
    reported, recomputed = checks["epsilon_reported"], checks["epsilon_recomputed"]
    worst = max((abs(a - b) / b for a, b in zip(reported, recomputed)), default=0.0)
    worst_subsampled = max((abs(a - b) / b for a, b in checks["epsilon_subsampled"]), default=None)
    headline_eps = 3.0 if 3.0 in epsilons else epsilons[0]
    dp_row = next(r for r in table if r["method"] == "fedavg" and r["epsilon"] == headline_eps)
    # The headline DP variant is the one the validation split chose (TrainingSettings), not the test sets.
    best_dp = next(r for r in table if r["method"] == settings.headline_strategy and r["epsilon"] == headline_eps)
    pooled_row = next(r for r in table if r["method"] == "pooled")
    result = {
        "benchmark": "training",
        "seeds": seeds,
        "epsilons": list(epsilons),
        "delta": 10.0 ** -settings.delta_exponent,
        "settings": dataclasses.asdict(settings),
        "headline_epsilon": headline_eps,
        f"dp{headline_eps:g}_method": best_dp["method"],
        f"dp{headline_eps:g}_mean_accuracy": best_dp["mean_accuracy"]["mean"],
        f"dp{headline_eps:g}_pooled_accuracy": best_dp["pooled_accuracy"]["mean"],
        f"dp{headline_eps:g}_pooled_auc": best_dp["pooled_auc"]["mean"],
        f"dp{headline_eps:g}_pooled_accuracy_nodes": best_dp["pooled_accuracy_nodes"]["mean"],
        f"dp{headline_eps:g}_fedavg_mean_accuracy": dp_row["mean_accuracy"]["mean"],
        f"dp{headline_eps:g}_fedavg_pooled_accuracy": dp_row["pooled_accuracy"]["mean"],
        "pooled_nonprivate_mean_accuracy": pooled_row["mean_accuracy"]["mean"],
        "pooled_nonprivate_pooled_accuracy": pooled_row["pooled_accuracy"]["mean"],
        "epsilon_reported": round(max(reported, default=0.0), 4),
        "epsilon_recomputed": round(max(recomputed, default=0.0), 4),
        "epsilon_max_relative_difference": round(worst, 6),
        "epsilon_subsampled_checked": len(checks["epsilon_subsampled"]),
        "epsilon_subsampled_max_relative_difference": (round(worst_subsampled, 6)
                                                       if worst_subsampled is not None else None),
        "epsilon_agree": worst <= 0.10,
        "coordinator_accuracy_mismatches": checks["coordinator_accuracy_mismatches"],
        "train_seconds_missing": checks["train_seconds_missing"],
        "table": table,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    for line in table_lines(result):
        print(line, file=sys.stderr)
    if write_docs:
        write_benchmarks_page(result)
    return result
