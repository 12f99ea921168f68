"""Overhead benchmark: what privacy, consent and the Flower deployment engine cost, as ratios measured side
by side in one run.

    twinledger bench overhead --json

- **dp_step_ratio**: one DP-SGD step (Opacus: per-example gradients, clipping, noise) over one plain SGD step,
  same model (the heart-disease logistic regression), same batch (Cleveland's training set, the node's
  full-batch DP setting), fixed batches, one intra-op thread, timed in alternation after warm-up (best of several
  repeats). Opacus's other per-example gradient modes ("ew", "functorch") are timed the same way for comparison.
- **consent_epoch_ratio**: on anvil with all four hospitals' patients enrolled and consenting, one epoch as the
  node runs it behind the consent gate (the study's terms and status at the pinned block, the batched consent
  read at that block, decrypting the admitted records, building and standardising the features, then the epoch
  of DP-SGD) over the same epoch on features already in memory; summed over the four hospitals, median of
  several repeats. The parts are reported, and the ratio without the study check (the definition used before
  November 2026).
- **round_overhead_ratio**: a real two-round deployment (`deploy.demo.run_demo`: anvil, SuperLink, four
  SuperNodes, `flwr run`), each round's coordinator-side training wall time (pin block, send, wait for the
  replies, aggregate) over the slowest node's own training time within it (`train-seconds`, which the node
  measures around `HospitalNode.train` and the coordinator records per hospital per round). The SuperNodes are
  the warm launcher (node/supernode.py); the same deployment with Flower's stock `flower-supernode` runs in the
  same benchmark for comparison (`stock_round_*`). What a fresh ClientApp process pays before its message
  (imports) is measured separately.
- **secagg_round_ratio**: the same deployment's round wall time (train, aggregate, evaluate, anchor) with secure
  aggregation (Flower's SecAgg+, the default) over the same rounds aggregated in the clear (`secure-aggregation`
  false), four hospitals, both runs in this benchmark; `secagg_training_phase_ratio` compares the training phases
  alone (where SecAgg+'s four stages run).
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("twinledger.bench")


# ---- DP-SGD step vs plain SGD step ----


def _time_steps(steps: dict, n: int, repeats: int) -> dict[str, float]:
    """Best mean time per call of each step function, the functions timed in alternation after a warm-up."""
    for step in steps.values():
        for _ in range(max(20, n // 5)):
            step()
    best = {name: float("inf") for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            for _ in range(n):
                step()
            best[name] = min(best[name], (time.perf_counter() - started) / n)
    return best


def dp_step_times(features: np.ndarray, labels: np.ndarray, *, steps: int = 400, repeats: int = 5,
                  max_grad_norm: float = 0.5, noise_multiplier: float = 1.0, grad_sample_mode: str = "hooks") -> dict:
    """`grad_sample_mode`: Opacus's way to compute per-example gradients; the node uses "hooks" (node/trainer.py)."""
    from opacus import PrivacyEngine

    from federation.tasks.heart_disease import HeartDiseaseTask

    task = HeartDiseaseTask()
    x, y = torch.from_numpy(features), torch.from_numpy(labels)

    torch.manual_seed(0)
    plain_model = task.build_model()
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=0.1)

    def plain_step():
        plain_opt.zero_grad()
        task.loss(plain_model(x), y).backward()
        plain_opt.step()

    torch.manual_seed(0)
    model = task.build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private_model, private_opt, _ = PrivacyEngine(accountant="rdp").make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm, poisson_sampling=False, grad_sample_mode=grad_sample_mode,
        )

    def dp_step():
        private_opt.zero_grad()
        task.loss(private_model(x), y).backward()
        private_opt.step()

    # One intra-op thread for both: the model is tiny, and with a second thread the steps' times depend on what
    # else the machine does (seen: a plain step of 0.06 ms or 7 ms depending on contention).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = _time_steps({"plain": plain_step, "dp": dp_step}, steps, repeats)
    finally:
        torch.set_num_threads(threads)
    plain_s, dp_s = times["plain"], times["dp"]
    return {"batch": len(y), "plain_step_s": plain_s, "dp_step_s": dp_s, "ratio": dp_s / plain_s}


# ---- an epoch behind the consent gate vs in memory ----


def _gate_for(node, task):
    """The node's own consent gate (as `HospitalNode` builds it), for the patients of the heart-disease task."""
    from node.consent_gate import ConsentGate
    from node.vault import Vault

    store = node.store.for_kind(task.record_kind) if hasattr(node.store, "for_kind") else node.store
    return ConsentGate(node.ledger, store, Vault.open(node.settings.data_key_file), hospital_account=node.account,
                       max_pinned_block_age_s=node.settings.max_pinned_block_age_s)


def consent_epoch(repeats: int = 5, *, rpc_url: str | None = None) -> dict:
    """The gate as a round runs it (`check_study`, then `admit`, then the features) plus one epoch, against the
    same epoch on the admitted patients' features already in memory."""
    from .flamby import TrainingSettings
    from .training import heart_disease_consortium, new_study
    from deploy.consortium import chain_url
    from federation.tasks.heart_disease import HeartDiseaseTask, standardiser
    from node.service import HospitalNode
    from node.trainer import train_private

    warnings.filterwarnings("ignore", message="Full backward hook")
    task = HeartDiseaseTask()
    s = TrainingSettings()
    totals = {"gated": [], "in_memory": [], "check_study": [], "consent_read": [], "decrypt_and_features": []}
    with tempfile.TemporaryDirectory(prefix="twinledger-overhead-") as scratch, \
            chain_url(rpc_url, log_path=Path(scratch) / "anvil.log") as url:
        consortium = heart_disease_consortium(Path(scratch), url)
        study = new_study(consortium, epsilon=3.0, rounds=5)
        block = consortium.coordinator.block_number()
        gates = {name: _gate_for(HospitalNode(node.settings), task) for name, node in consortium.nodes.items()}
        cohort = sum(len(node.patients.keys) for node in consortium.nodes.values())

        def prepare(gate):
            admitted = gate.admit(study, block, cohort="train", fields=task.fields)
            features, labels = task.examples(admitted.records)
            mean, std = standardiser(features)
            return ((features - mean) / std).astype(np.float32), labels

        def epoch(features, labels, seed):
            train_private(task.build_model(), task.loss, features, labels, epochs=1,
                          learning_rate=s.dp_learning_rate, batch_size=s.dp_batch_size,
                          max_grad_norm=s.dp_max_grad_norm, noise_multiplier=1.0, seed=seed)

        memory = {name: prepare(gate) for name, gate in gates.items()}  # what the gate admits, once
        admitted_train = sum(len(v[1]) for v in memory.values())
        for name, gate in gates.items():  # warm-up: Opacus, the chain connection
            gate.check_study(study, block)
            epoch(*memory[name], 0)
        read_times: list[float] = []
        for gate in gates.values():  # time the consent read inside the gate's own call
            def timed(*args, _consents=gate.ledger.consents, **kwargs):
                t0 = time.perf_counter()
                try:
                    return _consents(*args, **kwargs)
                finally:
                    read_times.append(time.perf_counter() - t0)

            gate.ledger.consents = timed
        for r in range(repeats):
            parts = dict.fromkeys(totals, 0.0)
            read_times.clear()
            for name, gate in gates.items():
                t0 = time.perf_counter()
                epoch(*memory[name], r)
                parts["in_memory"] += time.perf_counter() - t0

                t0 = time.perf_counter()
                gate.check_study(study, block)
                checked = time.perf_counter()
                features, labels = prepare(gate)
                prepared = time.perf_counter()
                epoch(features, labels, r)
                parts["gated"] += time.perf_counter() - t0
                parts["check_study"] += checked - t0
                parts["decrypt_and_features"] += prepared - checked
            parts["consent_read"] = sum(read_times)
            parts["decrypt_and_features"] -= parts["consent_read"]  # admit's work besides the chain read
            for key, value in parts.items():
                totals[key].append(value)
    med = {k: statistics.median(v) for k, v in totals.items()}
    return {"cohort": cohort, "admitted_train": admitted_train, **{f"{k}_s": v for k, v in med.items()},
            "ratio": med["gated"] / med["in_memory"],
            "ratio_without_check_study": (med["gated"] - med["check_study"]) / med["in_memory"]}


# ---- the deployment engine's round vs the slowest node's training ----


def _import_seconds(modules: str, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {modules}"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def round_overhead(rounds: int = 2, *, warm: bool = True, secure: bool = True, secure_aggregation: bool = True) -> dict:
    """`rounds` rounds of the demo federation; `warm`: SuperNodes with warm ClientApp processes
    (node/supernode.py), else Flower's stock `flower-supernode` (a fresh `flwr-clientapp` per message);
    `secure`: the trust boundary as deployed (the default): TLS, node authentication, the Fleet gateway and the
    node follower on the Flower link, HTTPS through the TLS terminator to the chain, the app gate reading the
    study's app digest on chain; else plain HTTP on both links without them, for the side-by-side cost;
    `secure_aggregation`: the updates summed with SecAgg+ (the default), else aggregated in the clear."""
    import contextlib

    from deploy import processes
    from deploy.demo import DemoOptions, run_demo

    previous = os.environ.get("TWINLEDGER_WARM_SUPERNODE")
    os.environ["TWINLEDGER_WARM_SUPERNODE"] = "1" if warm else "0"  # read by processes.start_supernode
    try:
        links = contextlib.nullcontext() if secure else processes.insecure_links()
        with links, tempfile.TemporaryDirectory(prefix="twinledger-overhead-demo-") as scratch:
            report = run_demo(DemoOptions(workdir=Path(scratch) / "demo", report=Path(scratch) / "report.json",
                                          rounds=rounds, revocations_per_hospital=0, timeout_s=900,
                                          secure_aggregation=secure_aggregation)).as_dict()
    finally:
        if previous is None:
            os.environ.pop("TWINLEDGER_WARM_SUPERNODE", None)
        else:
            os.environ["TWINLEDGER_WARM_SUPERNODE"] = previous
    per_round = []
    for record in report["rounds"]:
        slowest = max(record["train_seconds"].values())
        per_round.append({
            "round": record["round"],
            "training_seconds": record["training_seconds"],
            "seconds": record["seconds"],
            "max_train_seconds": slowest,
            "train_seconds": record["train_seconds"],
            "ratio": record["training_seconds"] / slowest,
        })
    return {
        "rounds": per_round,
        "ratio": statistics.fmean(r["ratio"] for r in per_round),
        "full_round_ratio": statistics.fmean(r["seconds"] / r["max_train_seconds"] for r in per_round),
        "training_seconds": statistics.fmean(r["training_seconds"] for r in per_round),
        "round_seconds": statistics.fmean(r["seconds"] for r in per_round),
        "max_train_seconds": statistics.fmean(r["max_train_seconds"] for r in per_round),
        "wall_seconds": report["wall_seconds"],
    }


def process_costs() -> dict:
    """What a fresh ClientApp process pays before it handles its message, measured alone."""
    return {
        "process_python_s": _import_seconds("sys"),
        "process_clientapp_imports_s": _import_seconds("flwr.clientapp, node.client_app"),
        "process_train_imports_s": _import_seconds(
            "flwr.clientapp, node.client_app, node.privacy, node.trainer, opacus"),
        "process_torch_s": _import_seconds("torch"),
        "process_torch_dynamo_s": _import_seconds("torch._dynamo"),  # the first torch optimizer imports it
    }


def bench_overhead(*, repeats: int = 5, rounds: int = 2, compare_stock: bool = True, write_docs: bool = True) -> dict:
    """All three ratios in one run (see the module docstring); `compare_stock`: also run the deployment with
    Flower's stock SuperNodes, side by side."""
    from .flamby import load_hospital_data

    started = time.monotonic()
    data = load_hospital_data()
    cleveland = data["cleveland"]
    warnings.filterwarnings("ignore", message="Full backward hook")
    warnings.filterwarnings("ignore", message="Secure RNG turned off")
    dp = dp_step_times(cleveland.train_x, cleveland.train_y, repeats=repeats)
    dp_small = dp_step_times(cleveland.train_x[:8], cleveland.train_y[:8], repeats=repeats)
    # Opacus's other per-example gradient modes, same batch: the node keeps "hooks" (see the docs section)
    dp_modes = {mode: dp_step_times(cleveland.train_x, cleveland.train_y, repeats=repeats, grad_sample_mode=mode)
                for mode in ("ew", "functorch")}
    log.info("DP step %.2e s vs plain %.2e s (batch %d)", dp["dp_step_s"], dp["plain_step_s"], dp["batch"])
    consent = consent_epoch(repeats)
    log.info("consent epoch: gated %.4f s vs in memory %.4f s", consent["gated_s"], consent["in_memory_s"])
    deployment = round_overhead(rounds, warm=True)
    insecure = round_overhead(rounds, warm=True, secure=False)  # same rounds, plain HTTP, no node auth
    in_the_clear = round_overhead(rounds, warm=True, secure_aggregation=False)  # same rounds, no SecAgg+
    log.info("round: %.2f s with secure aggregation vs %.2f s without", deployment["round_seconds"],
             in_the_clear["round_seconds"])
    log.info("round: %.2f s secure vs %.2f s insecure", deployment["round_seconds"], insecure["round_seconds"])
    stock = round_overhead(rounds, warm=False) if compare_stock else None
    log.info("round overhead: %s (stock Flower SuperNodes: %s)", deployment["ratio"], stock and stock["ratio"])
    costs = process_costs()
    parts = {
        "study check": consent["check_study_s"],
        "consent read": consent["consent_read_s"],
        "decrypt + features": consent["decrypt_and_features_s"],
        "epoch (DP-SGD)": consent["in_memory_s"],
    }

    def rounds_of(run: dict, prefix: str) -> dict:
        return {
            f"{prefix}ratio": round(run["ratio"], 2),
            f"{prefix}full_round_ratio": round(run["full_round_ratio"], 2),
            f"{prefix}training_seconds": [r["training_seconds"] for r in run["rounds"]],
            f"{prefix}seconds": [r["seconds"] for r in run["rounds"]],
            f"{prefix}max_train_seconds": [r["max_train_seconds"] for r in run["rounds"]],
            f"{prefix}train_seconds": [r["train_seconds"] for r in run["rounds"]],
        }

    result = {
        "benchmark": "overhead",
        "dp_step_ratio": round(dp["ratio"], 3),
        "dp_step_ratio_goal": 2.0,
        "dp_batch": dp["batch"],
        "dp_step_s": round(dp["dp_step_s"], 7),
        "plain_step_s": round(dp["plain_step_s"], 7),
        "dp_step_ratio_batch8": round(dp_small["ratio"], 3),
        "dp_step_ratio_by_mode": {"hooks": round(dp["ratio"], 3),
                                  **{mode: round(r["ratio"], 3) for mode, r in dp_modes.items()}},
        "consent_epoch_ratio": round(consent["ratio"], 3),
        "consent_epoch_ratio_goal": 1.05,
        "consent_epoch_ratio_without_check_study": round(consent["ratio_without_check_study"], 3),
        "consent_cohort": consent["cohort"],
        "consent_admitted_train": consent["admitted_train"],
        "consent_gated_epoch_s": round(consent["gated_s"], 4),
        "consent_in_memory_epoch_s": round(consent["in_memory_s"], 4),
        "consent_check_study_s": round(consent["check_study_s"], 4),
        "consent_read_s": round(consent["consent_read_s"], 4),
        "consent_decrypt_and_features_s": round(consent["decrypt_and_features_s"], 4),
        "consent_dominant_part": max(parts, key=parts.get),
        "round_overhead_ratio": round(deployment["ratio"], 2),
        "round_overhead_full_round_ratio": round(deployment["full_round_ratio"], 2),
        **rounds_of(deployment, "round_"),
        "round_mean_training_seconds": round(deployment["training_seconds"], 2),
        "round_mean_seconds": round(deployment["round_seconds"], 2),
        "round_seconds_secure": round(deployment["round_seconds"], 2),
        "round_seconds_insecure": round(insecure["round_seconds"], 2),
        "secure_round_ratio": round(deployment["round_seconds"] / insecure["round_seconds"], 3),
        "secure_round_ratio_goal": 1.10,
        "secagg_round_ratio": round(deployment["round_seconds"] / in_the_clear["round_seconds"], 3),
        "secagg_round_ratio_goal": 1.5,
        "secagg_training_phase_ratio": round(deployment["training_seconds"] / in_the_clear["training_seconds"], 3),
        "round_seconds_secagg": round(deployment["round_seconds"], 2),
        "round_seconds_without_secagg": round(in_the_clear["round_seconds"], 2),
        "training_seconds_secagg": round(deployment["training_seconds"], 2),
        "training_seconds_without_secagg": round(in_the_clear["training_seconds"], 2),
        **({**rounds_of(stock, "stock_round_"), "stock_round_mean_training_seconds": round(stock["training_seconds"], 2),
            "stock_round_mean_seconds": round(stock["round_seconds"], 2)} if stock else {}),
        **{key: round(value, 3) for key, value in costs.items()},
        "supernode_idle_poll_s": {"stock": 3.0, "warm": 0.5},
        "deployment_wall_seconds": deployment["wall_seconds"],
        "wall_seconds": round(time.monotonic() - started, 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
    }
    if write_docs:
        from .overhead_page import write_overhead_section

        write_overhead_section(result)
    return result
