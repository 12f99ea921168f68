"""Overhead benchmark: what privacy, consent and the Flower deployment engine cost, as ratios measured side
by side in one run.

    twinledger bench overhead --json

- **dp_step_ratio**: one DP-SGD step (Opacus: per-example gradients, clipping, noise) over one plain SGD step,
  same model (the heart-disease logistic regression), same batch (Cleveland's training set, the node's
  full-batch DP setting), fixed batches, one intra-op thread, timed in alternation after warm-up (best of several repeats).
- **consent_epoch_ratio**: on anvil with all four hospitals' patients enrolled and consenting, one epoch as the
  node runs it behind the consent gate (the batched consent read at the pinned block, decrypting the admitted
  records, building and standardising the features, then the epoch of DP-SGD) over the same epoch on features
  already in memory; summed over the four hospitals, median of several repeats. The parts are reported.
- **round_overhead_ratio**: a real two-round deployment (`deploy.demo.run_demo`: anvil, SuperLink, four
  SuperNodes, `flwr run`), each round's coordinator-side training wall time (pin block, send, wait for the
  replies, aggregate) over the slowest node's own training time within it (`train-seconds`, which the node
  measures around `HospitalNode.train` and the coordinator records per hospital per round). The parts of the
  difference that can be identified are measured separately: a fresh process importing what the ClientApp
  imports, and the SuperNode's 3 s idle poll (flwr 1.41 `start_client_internal`: `time.sleep(3)` when no
  message is waiting).
"""

from __future__ import annotations

import logging
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
                  max_grad_norm: float = 0.5, noise_multiplier: float = 1.0) -> dict:
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
            max_grad_norm=max_grad_norm, poisson_sampling=False,
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


def consent_epoch(repeats: int = 5, *, rpc_url: str | None = None) -> dict:
    from deploy import processes
    from deploy.bench_training import Federation, TrainingSettings
    from federation.tasks.heart_disease import HeartDiseaseTask, standardiser
    from node.service import HospitalNode
    from node.trainer import train_private

    warnings.filterwarnings("ignore", message="Full backward hook")
    task = HeartDiseaseTask()
    s = TrainingSettings()
    totals = {"gated": [], "in_memory": [], "consent_read": [], "decrypt_and_features": [], "check_study": []}
    with tempfile.TemporaryDirectory(prefix="twinledger-overhead-") as scratch:
        workdir = Path(scratch)
        anvil = None
        if rpc_url is None:
            anvil, rpc_url = processes.start_anvil(port=processes.free_port(), log_path=workdir / "anvil.log")
        try:
            fed = Federation.set_up(workdir, rpc_url)
            study = fed.new_study(epsilon=3.0, rounds=5)
            block = fed.coordinator.block_number()
            nodes = {name: HospitalNode(settings) for name, settings in fed.nodes.items()}
            gates = {name: node._gate() for name, node in nodes.items()}
            cohort = sum(len(keys) for keys in fed.patient_keys.values())
            # The in-memory data: what the gate admits, prepared once.
            memory = {}
            for name, gate in gates.items():
                admitted = gate.admit(study, block, cohort="train", fields=task.fields)
                features, labels = task.examples(admitted.records)
                mean, std = standardiser(features)
                memory[name] = (((features - mean) / std).astype(np.float32), labels)
            admitted_train = sum(len(v[1]) for v in memory.values())

            def epoch(features, labels, seed):
                model = task.build_model()
                train_private(model, task.loss, features, labels, epochs=1, learning_rate=s.dp_learning_rate,
                              batch_size=s.dp_batch_size, max_grad_norm=s.dp_max_grad_norm, noise_multiplier=1.0,
                              seed=seed)

            for name in memory:  # warm-up (Opacus, the chain connection)
                epoch(*memory[name], 0)
            read_times: list[float] = []
            for gate in gates.values():  # time the consent read inside the gate's own call
                consents = gate.ledger.consents

                def timed(*args, _consents=consents, **kwargs):
                    t0 = time.perf_counter()
                    try:
                        return _consents(*args, **kwargs)
                    finally:
                        read_times.append(time.perf_counter() - t0)

                gate.ledger.consents = timed
            for r in range(repeats):
                gated = in_memory = check = 0.0
                read_times.clear()
                for name, gate in gates.items():
                    t0 = time.perf_counter()
                    epoch(*memory[name], r)
                    in_memory += time.perf_counter() - t0

                    t0 = time.perf_counter()
                    gate.check_study(study, block)
                    check += time.perf_counter() - t0

                    t0 = time.perf_counter()
                    admitted = gate.admit(study, block, cohort="train", fields=task.fields)
                    features, labels = task.examples(admitted.records)
                    mean, std = standardiser(features)
                    features = ((features - mean) / std).astype(np.float32)
                    prepared = time.perf_counter()
                    epoch(features, labels, r)
                    done = time.perf_counter()
                    gated += done - t0
                    totals["decrypt_and_features"].append(prepared - t0)  # summed per repeat below
                totals["gated"].append(gated)
                totals["in_memory"].append(in_memory)
                totals["consent_read"].append(sum(read_times))
                totals["check_study"].append(check)
            n = len(gates)
            prepared_per_repeat = [sum(totals["decrypt_and_features"][i:i + n])
                                   for i in range(0, len(totals["decrypt_and_features"]), n)]
            # the gate's preparation minus its consent read: decrypting and building the features
            totals["decrypt_and_features"] = [p - c for p, c in zip(prepared_per_repeat, totals["consent_read"])]
        finally:
            if anvil is not None:
                anvil.stop()
    med = {k: statistics.median(v) for k, v in totals.items()}
    return {"cohort": cohort, "admitted_train": admitted_train, **{f"{k}_s": v for k, v in med.items()},
            "ratio": med["gated"] / med["in_memory"]}


# ---- the deployment engine's round vs the slowest node's training ----


def _import_seconds(modules: str, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {modules}"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def round_overhead(rounds: int = 2) -> dict:
    from deploy.demo import DemoOptions, run_demo

    with tempfile.TemporaryDirectory(prefix="twinledger-overhead-demo-") as scratch:
        report = run_demo(DemoOptions(workdir=Path(scratch) / "demo", report=Path(scratch) / "report.json",
                                      rounds=rounds, revocations_per_hospital=0, timeout_s=900))
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
        "process_python_s": _import_seconds("sys"),
        "process_clientapp_imports_s": _import_seconds("flwr.clientapp, node.client_app"),
        "process_train_imports_s": _import_seconds("flwr.clientapp, node.client_app, node.privacy, node.trainer, opacus"),
        "wall_seconds": report["wall_seconds"],
    }


def bench_overhead(*, repeats: int = 5, rounds: int = 2, write_docs: bool = True) -> dict:
    """All three ratios in one run (see the module docstring)."""
    from deploy.bench_training import load_hospital_data

    started = time.monotonic()
    data = load_hospital_data()
    cleveland = data["cleveland"]
    warnings.filterwarnings("ignore", message="Full backward hook")
    warnings.filterwarnings("ignore", message="Secure RNG turned off")
    dp = dp_step_times(cleveland.train_x, cleveland.train_y, repeats=repeats)
    dp_small = dp_step_times(cleveland.train_x[:8], cleveland.train_y[:8], repeats=repeats)
    log.info("DP step %.2e s vs plain %.2e s (batch %d)", dp["dp_step_s"], dp["plain_step_s"], dp["batch"])
    consent = consent_epoch(repeats)
    log.info("consent epoch: gated %.4f s vs in memory %.4f s", consent["gated_s"], consent["in_memory_s"])
    deployment = round_overhead(rounds)
    log.info("round overhead: %s", deployment["ratio"])
    parts = {
        "consent read": consent["consent_read_s"],
        "decrypt + features": consent["decrypt_and_features_s"],
        "epoch (DP-SGD)": consent["in_memory_s"],
    }
    result = {
        "benchmark": "overhead",
        "dp_step_ratio": round(dp["ratio"], 3),
        "dp_step_ratio_goal": 2.0,
        "dp_batch": dp["batch"],
        "dp_step_s": round(dp["dp_step_s"], 7),
        "plain_step_s": round(dp["plain_step_s"], 7),
        "dp_step_ratio_batch8": round(dp_small["ratio"], 3),
        "consent_epoch_ratio": round(consent["ratio"], 3),
        "consent_epoch_ratio_goal": 1.05,
        "consent_cohort": consent["cohort"],
        "consent_admitted_train": consent["admitted_train"],
        "consent_gated_epoch_s": round(consent["gated_s"], 4),
        "consent_in_memory_epoch_s": round(consent["in_memory_s"], 4),
        "consent_read_s": round(consent["consent_read_s"], 4),
        "consent_decrypt_and_features_s": round(consent["decrypt_and_features_s"], 4),
        "consent_check_study_s": round(consent["check_study_s"], 4),
        "consent_dominant_part": max(parts, key=parts.get),
        "round_overhead_ratio": round(deployment["ratio"], 2),
        "round_overhead_full_round_ratio": round(deployment["full_round_ratio"], 2),
        "round_training_seconds": [r["training_seconds"] for r in deployment["rounds"]],
        "round_seconds": [r["seconds"] for r in deployment["rounds"]],
        "round_max_train_seconds": [r["max_train_seconds"] for r in deployment["rounds"]],
        "round_train_seconds": [r["train_seconds"] for r in deployment["rounds"]],
        "process_python_s": round(deployment["process_python_s"], 3),
        "process_clientapp_imports_s": round(deployment["process_clientapp_imports_s"], 3),
        "process_train_imports_s": round(deployment["process_train_imports_s"], 3),
        "supernode_idle_poll_s": 3.0,
        "deployment_wall_seconds": deployment["wall_seconds"],
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    if write_docs:
        write_overhead_section(result)
    return result


def write_overhead_section(result: dict, path: Path | None = None) -> Path:
    """Replace (or append) the `## Overhead` section of docs/benchmarks.md; the training section is kept."""
    from deploy.bench_training import DOCS_PAGE

    path = path or DOCS_PAGE
    r = result
    rounds = ", ".join(
        f"round {i + 1}: {t:.1f} s training phase ({s:.1f} s with evaluation and anchoring), slowest node "
        f"{m:.1f} s" for i, (t, s, m) in enumerate(zip(r["round_training_seconds"], r["round_seconds"],
                                                        r["round_max_train_seconds"])))
    lines = [
        "## Overhead: privacy, consent and the deployment engine (`twinledger bench overhead --json`)",
        "",
        f"Generated by `deploy/bench_overhead.py` in {r['wall_seconds']:.0f} s on this machine (2 cores). Each ratio "
        "is measured side by side in the same run.",
        "",
        "| ratio | measured | goal | what is compared |",
        "|---|---|---|---|",
        f"| `dp_step_ratio` | {r['dp_step_ratio']:.2f} (batch 8: {r['dp_step_ratio_batch8']:.2f}) | ≤ 2 | one DP-SGD step "
        f"(Opacus per-example gradients, clipping, noise) / one plain SGD step; same logistic regression, same "
        f"batch (Cleveland's {r['dp_batch']} training patients, the node's full-batch DP setting): "
        f"{r['dp_step_s'] * 1e6:.0f} µs vs {r['plain_step_s'] * 1e6:.0f} µs |",
        f"| `consent_epoch_ratio` | {r['consent_epoch_ratio']:.2f} | ≤ 1.05 | one epoch behind the consent gate / the "
        f"same epoch on data in memory, four hospitals ({r['consent_cohort']} patients enrolled and consenting, "
        f"{r['consent_admitted_train']} training patients admitted), on anvil: {r['consent_gated_epoch_s'] * 1e3:.0f} ms "
        f"vs {r['consent_in_memory_epoch_s'] * 1e3:.0f} ms |",
        f"| `round_overhead_ratio` | {r['round_overhead_ratio']:.2f} (whole round: "
        f"{r['round_overhead_full_round_ratio']:.2f}) | report | a real deployment round's training phase "
        "(coordinator: pin block, send, wait, aggregate) / the slowest node's own `train-seconds` |",
        "",
        "**DP-SGD step.** The model is tiny (14 parameters), so a plain step costs tens of microseconds and the "
        "DP step's cost is Opacus's fixed per-step work (hooks that keep per-example gradients, per-example norms, "
        "clipping, noise generation) rather than arithmetic; the ratio is the same at batch 8 and at the full batch. "
        f"In absolute terms a DP step takes {r['dp_step_s'] * 1e3:.2f} ms and a node's DP round takes a few steps "
        "(full batches, 3 local epochs): the goal of 2 is not met, and it does not matter for this task's wall time "
        "(see the round below). For a larger model the per-example work would dominate instead.",
        "",
        f"**Consent-gated epoch.** Summed over the four hospitals (median of repeats): the batched consent read at the "
        f"pinned block {r['consent_read_s'] * 1e3:.0f} ms (one `eth_call` per hospital), decrypting the admitted "
        f"records and building the features {r['consent_decrypt_and_features_s'] * 1e3:.0f} ms, the epoch itself "
        f"{r['consent_in_memory_epoch_s'] * 1e3:.0f} ms; largest part: {r['consent_dominant_part']}. The node also "
        f"checks the study's terms at the block before admitting anyone ({r['consent_check_study_s'] * 1e3:.0f} ms, "
        "four more chain reads per hospital), not counted in the ratio. An epoch here is one full-batch DP-SGD step "
        "on at most 200 patients (including Opacus's set-up), so the gate's fixed tens of milliseconds are "
        "comparable to it: the goal of 1.05 is not met for this task, and would be for any epoch of a second or more "
        "(the gate's cost grows with the patients, not with the model; `twinledger bench ledger`: 10,000 consents "
        "in one batched read).",
        "",
        f"**Deployment round.** Two rounds of the demo federation (`deploy.demo.run_demo`: anvil, SuperLink, four "
        f"SuperNodes, `flwr run`): {rounds}. Each node reports `train-seconds` (a timer around "
        "`HospitalNode.train` in `node/client_app.py`); the coordinator records them per hospital per round in "
        "report.json (`rounds[i].train_seconds`). What makes up the rest, measured or read from Flower's source:",
        "",
        f"- a fresh process per message (Flower starts a ClientApp process for each train and each evaluate message): "
        f"importing what the ClientApp imports takes {r['process_clientapp_imports_s']:.1f} s (torch, web3/eth-account, "
        f"flwr) and {r['process_train_imports_s']:.1f} s with Opacus, measured alone; four nodes start at once on two "
        "cores, so the starts overlap and slow each other. The Opacus import (scipy among its dependencies) happens "
        "inside `HospitalNode.train` (deferred so that evaluation and identification do not pay for it) and is therefore "
        "part of each node's `train-seconds`, most of it: the DP-SGD itself takes milliseconds;",
        f"- the SuperNode's idle poll: with no message waiting it sleeps {r['supernode_idle_poll_s']:g} s "
        "(flwr 1.41 `start_client_internal`), so a message waits up to 3 s before its node picks it up, once for "
        "train and once for evaluate; the ServerApp side also polls for replies;",
        "- chain calls: the coordinator pins the block (one `eth_call`) and, after evaluation, anchors the round "
        "(one transaction, outside the training phase); each node reads the study terms and the consents "
        "(tens of milliseconds, above).",
        "",
        "What our code could cut cheaply had already been cut before this benchmark: Opacus, scikit-learn and the "
        "dp-accounting cross-check are imported only where used; no further cut was found: the rest of the ClientApp's imports (torch, web3, flwr) are needed by every "
        "message. The remaining overhead is Flower's process-per-message model and its poll interval, which are not "
        "ours to change; for this task a round costs seconds of engine time around milliseconds of training.",
        "",
    ]
    section = "\n".join(lines)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    marker = text.find("\n## Overhead")
    text = (text[:marker] if marker >= 0 else text).rstrip("\n") + "\n\n" + section
    path.write_text(text)
    return path
