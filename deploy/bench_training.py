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
- **The transport is in-process** (`InProcessGrid` below): each Flower message is serialised to Flower's
  wire format and back, then handed straight to the ClientApp object in this process. Flower's deployment
  engine starts a fresh process per message (about 25 s a round here), far too slow for the ~35 runs of
  this benchmark; what the benchmark measures (the model, the privacy spending) does not depend on it.
- **Non-private federated runs** are studies recorded on chain with epsilon budget
  `federation.protocol.NON_PRIVATE_EPSILON` (1e6); the benchmark's nodes opt in with
  `allow-non-private-studies`, train with plain SGD and report epsilon as infinity.
- **Local and pooled baselines** are not federated: they train the same model with the node's own plain
  SGD (`node.trainer.train_plain`) on the same FLamby split, each hospital's features standardised with
  its own training statistics, in this process.
- **Metrics** come from the final global model, evaluated here on each hospital's test set (the benchmark
  holds the data): mean of per-hospital test accuracies, accuracy and AUC on the pooled test set. The
  pooled accuracy is checked against the coordinator's last-round accuracy, which the nodes computed.
- **Privacy cross-check**: for every DP run, each hospital's epsilon is recomputed from the (noise
  multiplier, sample rate, steps) its node logged (`node.store.PrivacySpend`) with Google's
  `dp-accounting` RDP accountant, independent of Opacus's, and compared with what the node reported.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import numpy as np
import torch
from eth_account import Account
from flwr.app import Context, Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid

from contracts import ledger as lg
from coordinator.study_run import RunOptions, StudyRun
from deploy import processes
from deploy.demo import DATA_DIR, HOSPITALS
from federation import protocol
from federation.tasks.heart_disease import HeartDiseaseTask, flamby_split, standardiser
from node import admin as node_admin
from node.importer import read_heart_disease_csv
from node.store import Store

log = logging.getLogger("twinledger.bench")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOCS_PAGE = PROJECT_ROOT / "docs" / "benchmarks.md"

# FLamby's published figures (du Terrail et al., NeurIPS 2022 Datasets and Benchmarks; logistic regression,
# mean of 5 seeds), as quoted in the project's data README: (mean per-hospital accuracy, pooled accuracy).
FLAMBY = {
    "pooled": (0.735, 0.795),
    "fedavg": (0.685, 0.748),
    "fedadam": (0.726, 0.779),
    "fedyogi": (0.731, 0.779),
    "local:cleveland": (0.722, 0.784),
}


@dataclass
class TrainingSettings:
    """Hyperparameters, every variant tuned with the same kind of grid (learning rate, epochs or local epochs,
    batch size or clipping norm; 3 seeds) on a validation split carved from the hospitals' training data, never
    on the test sets: `python -m deploy.tune_training` (see its docstring). DP-SGD uses full batches (sample
    rate 1): it suits hospitals of 30 to 200 training patients, and its accounting is cheap."""

    rounds: int = 5
    # Non-private FedAvg: plain mini-batch SGD at each node.
    local_epochs: int = 5
    learning_rate: float = 0.3
    batch_size: int = 1024
    # Pooled baseline (all training data in one place) and local baselines (each hospital alone).
    central_epochs: int = 40
    central_learning_rate: float = 0.01
    central_batch_size: int = 32
    silo_epochs: int = 10
    silo_learning_rate: float = 0.1
    silo_batch_size: int = 32
    # DP variants: DP-SGD (Opacus); a batch larger than any hospital's training set means full batches.
    dp_rounds: int = 5
    dp_local_epochs: int = 3
    dp_learning_rate: float = 1.0
    dp_batch_size: int = 1024
    dp_max_grad_norm: float = 0.5
    adaptive_strategy: str = "fedadam"  # "fedadam" or "fedyogi"
    server_learning_rate: float = 0.3
    delta_exponent: int = 5


# ---- the in-process transport ----


class InProcessGrid(Grid):
    """A Grid that hands each message to the real ClientApp object in this process, one node home per node.

    Messages go through Flower's wire format (protobuf) both ways, as they would between processes.
    """

    def __init__(self, node_homes: dict[int, Path]):
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.task_identity import TaskIdentity

        from node.client_app import app

        # What flwr's ServerApp runtime sets in its process before the ServerApp creates messages.
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
        self.app = app
        self.contexts = {
            node_id: Context(run_id=1, node_id=node_id, node_config={"node-home": str(home)}, state=RecordDict(),
                             run_config={})
            for node_id, home in node_homes.items()
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run) -> None:  # one implicit run
        self._run = run

    @property
    def run(self):
        return getattr(self, "_run", None)

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages) -> list[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())  # what the SuperLink does
            message.metadata.__dict__["_run_id"] = 1
            delivered = message_from_proto(message_to_proto(message))
            delivered.metadata.__dict__["_message_id"] = message.metadata.message_id
            reply = self.app(message=delivered, context=self.contexts[message.metadata.dst_node_id])
            reply.metadata.__dict__["_message_id"] = str(uuid4())
            self._replies[message.metadata.message_id] = message_from_proto(message_to_proto(reply))
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))


# ---- the data, as each hospital's node splits and standardises it ----


@dataclass
class HospitalData:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def load_hospital_data() -> dict[str, HospitalData]:
    """FLamby's split (as node.importer does it) and each hospital's own standardisation (as the node does)."""
    task = HeartDiseaseTask()
    data = {}
    for name, filename in HOSPITALS.items():
        records = [c for _, c in read_heart_disease_csv(DATA_DIR / filename, record_prefix="X") if task.is_complete(c)]
        features, labels = task.examples(records)
        is_test = flamby_split(labels)
        mean, std = standardiser(features[~is_test])
        features = ((features - mean) / std).astype(np.float32)
        data[name] = HospitalData(features[~is_test], labels[~is_test], features[is_test], labels[is_test])
    return data


def evaluate_model(state: dict[str, torch.Tensor], data: dict[str, HospitalData]) -> dict:
    from sklearn.metrics import roc_auc_score

    model = HeartDiseaseTask().build_model()
    model.load_state_dict(state)
    model.eval()
    per_hospital, scores, labels = {}, [], []
    with torch.no_grad():
        for name, d in data.items():
            logits = model(torch.from_numpy(d.test_x)).reshape(-1).numpy()
            per_hospital[name] = float(((logits > 0) == (d.test_y > 0.5)).mean())
            scores.append(logits)
            labels.append(d.test_y)
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    return {
        "mean_accuracy": float(np.mean(list(per_hospital.values()))),
        "pooled_accuracy": float(((scores > 0) == (labels > 0.5)).mean()),
        "pooled_auc": float(roc_auc_score(labels, scores)),
        "per_hospital": per_hospital,
    }


def train_centrally(x: np.ndarray, y: np.ndarray, settings: TrainingSettings, seed: int, *,
                    pooled: bool = True) -> dict[str, torch.Tensor]:
    """The node's plain SGD in one place, with the pooled (or, pooled=False, the local) baseline's settings."""
    from node.trainer import train_plain

    epochs, lr, batch = ((settings.central_epochs, settings.central_learning_rate, settings.central_batch_size)
                         if pooled else (settings.silo_epochs, settings.silo_learning_rate, settings.silo_batch_size))
    torch.manual_seed(seed)
    model = HeartDiseaseTask().build_model()
    return train_plain(model, HeartDiseaseTask().loss, x, y, epochs=epochs, learning_rate=lr, batch_size=batch,
                       seed=seed).state


# ---- the federation: chain, contracts, four nodes, patients ----


@dataclass
class Federation:
    workdir: Path
    w3: object
    deployment: lg.Deployment
    operator: lg.Ledger
    coordinator: lg.Ledger
    nodes: dict[str, object] = field(default_factory=dict)  # name -> NodeSettings
    ledgers: dict[str, lg.Ledger] = field(default_factory=dict)
    patient_keys: dict[str, dict[str, str]] = field(default_factory=dict)  # hospital -> pseudonym -> key
    nonces: dict[str, int] = field(default_factory=dict)  # pseudonym -> the patient's next signature nonce

    @classmethod
    def set_up(cls, workdir: Path, rpc_url: str) -> "Federation":
        """Deploy the contracts; four nodes (opted in to non-private studies) with their records, enrolled."""
        w3 = lg.connect(rpc_url)

        def funded_key(path: Path) -> str:
            key = lg.write_key(path)
            lg.fund_from_dev_account(w3, Account.from_key(key).address)
            return key

        operator_key = funded_key(workdir / "operator.key")
        deployment = lg.deploy(w3, operator_key)
        deployment_file = workdir / "deployment.json"
        deployment.save(deployment_file)
        operator = lg.Ledger(w3, deployment, account_key=operator_key)
        coordinator = lg.Ledger(w3, deployment, account_key=funded_key(workdir / "coordinator.key"))
        operator.grant_coordinator(coordinator.address)
        fed = cls(workdir, w3, deployment, operator, coordinator)
        for name, filename in HOSPITALS.items():
            settings = node_admin.init_node(workdir / "nodes" / name, hospital=name, rpc_url=rpc_url,
                                            deployment_file=deployment_file)
            settings = dataclasses.replace(settings, allow_non_private_studies=True)
            settings.save()
            account = node_admin.hospital_address(settings)
            lg.fund_from_dev_account(w3, account)
            operator.register_hospital(account, secrets.token_bytes(32))
            node_admin.import_records(settings, DATA_DIR / filename)
            ledger = node_admin.open_ledger(settings)
            store = Store(settings.resolved_database_url)
            # Only patients with complete records can be used by any task: they are the ones asked to consent.
            keys = {p.pseudonym: "0x" + secrets.token_hex(32) for p in store.patients() if p.cohort != "incomplete"}
            numbers = {p.pseudonym: p.record_number for p in store.patients()}
            node_admin.enrol_patients(settings, ledger, {numbers[p]: Account.from_key(k).address for p, k in keys.items()})
            fed.nodes[name], fed.ledgers[name], fed.patient_keys[name] = settings, ledger, keys
            fed.nonces.update({p: 0 for p in keys})
        return fed

    def new_study(self, *, epsilon: float, rounds: int, delta_exponent: int = 5) -> bytes:
        """A study every hospital accepts and every patient (with a complete record) consents to."""
        study_id = lg.new_study_id()
        far = int(time.time()) + 30 * 24 * 3600
        self.operator.propose_study(study_id, purpose="HRESCH", task_id="heart-disease/v1", epsilon_budget=epsilon,
                                    delta_exponent=delta_exponent, rounds=rounds, ends_at=far)
        for name, ledger in self.ledgers.items():
            ledger.accept_study(study_id)
            grants = []
            for pseudonym, key in self.patient_keys[name].items():
                grants.append(lg.sign_grant(key, self.deployment, pseudonym=bytes.fromhex(pseudonym[2:]),
                                            study_id=study_id, valid_from=0, valid_until=far,
                                            nonce=self.nonces[pseudonym], deadline=far))
                self.nonces[pseudonym] += 1
            node_admin.relay_grants(ledger, grants)
        return study_id


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


def federated_run(fed: Federation, *, strategy: str, epsilon: float | None, seed: int, settings: TrainingSettings,
                  data: dict[str, HospitalData]) -> dict:
    """One study, run by the coordinator's StudyRun over the in-process grid; epsilon None = non-private."""
    private = epsilon is not None
    rounds = settings.dp_rounds if private else settings.rounds
    study_id = fed.new_study(epsilon=epsilon if private else protocol.NON_PRIVATE_EPSILON, rounds=rounds,
                             delta_exponent=settings.delta_exponent)
    options = RunOptions(
        study_id=study_id, num_rounds=rounds,
        local_epochs=settings.dp_local_epochs if private else settings.local_epochs,
        learning_rate=settings.dp_learning_rate if private else settings.learning_rate,
        batch_size=settings.dp_batch_size if private else settings.batch_size,
        max_grad_norm=settings.dp_max_grad_norm, min_nodes=len(fed.nodes), wait_for_nodes_s=0, seed=seed,
        strategy=strategy, server_learning_rate=settings.server_learning_rate,
    )
    grid = InProcessGrid({i: s.home for i, s in enumerate(fed.nodes.values(), start=1)})
    run = StudyRun(grid, fed.coordinator, options, fed.workdir / "runs" / ("0x" + study_id.hex()[:12]))
    torch.manual_seed(seed)  # the nodes' sampling and noise draw from this process's generator
    arrays = run.run()
    report = run.report.as_dict()
    errors = {r["round"]: r["errors"] for r in report["rounds"] if r["errors"]}
    if errors:
        raise RuntimeError(f"{strategy} run (epsilon {epsilon}) had errors: {errors}")
    result = evaluate_model(arrays.to_torch_state_dict(), data)
    result["coordinator_accuracy"] = report["rounds"][-1]["accuracy"]
    # Every node reported its own training wall time, and the coordinator recorded it per round.
    result["train_seconds_recorded"] = all(
        set(r.get("train_seconds", {})) == set(fed.nodes) and all(v >= 0 for v in r["train_seconds"].values())
        for r in report["rounds"]
    )
    if private:
        study_hex = "0x" + study_id.hex()
        delta = 10.0 ** -settings.delta_exponent
        result["epsilon_reported"] = {h["name"]: h["epsilon_spent"] for h in report["hospitals"]}
        result["epsilon_recomputed"] = {
            name: recompute_epsilon(Store(s.resolved_database_url), study_hex, delta) for name, s in fed.nodes.items()
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
    runs: dict[str, list[dict]] = {}
    checks = {"epsilon_reported": [], "epsilon_recomputed": [], "coordinator_accuracy_mismatches": 0,
              "train_seconds_missing": 0}
    with tempfile.TemporaryDirectory(prefix="twinledger-bench-") as scratch:
        workdir = Path(scratch)
        anvil = None
        if rpc_url is None:
            anvil, rpc_url = processes.start_anvil(port=processes.free_port(), log_path=workdir / "anvil.log")
        try:
            fed = Federation.set_up(workdir, rpc_url)
            log.info("federation set up in %.1f s", time.monotonic() - started)
            for seed in range(seeds):
                for name, d in data.items():
                    state = train_centrally(d.train_x, d.train_y, settings, seed, pooled=False)
                    runs.setdefault(f"local:{name}", []).append(evaluate_model(state, data))
                pooled_x = np.concatenate([d.train_x for d in data.values()])
                pooled_y = np.concatenate([d.train_y for d in data.values()])
                runs.setdefault("pooled", []).append(evaluate_model(train_centrally(pooled_x, pooled_y, settings, seed), data))
                variants = [("fedavg", "fedavg", None)] + [
                    (f"{strategy}+dp:{eps:g}", strategy, eps)
                    for eps in epsilons for strategy in ("fedavg", settings.adaptive_strategy)
                ]
                for key, strategy, eps in variants:
                    t0 = time.monotonic()
                    result = federated_run(fed, strategy=strategy, epsilon=eps, seed=seed, settings=settings, data=data)
                    runs.setdefault(key, []).append(result)
                    if result["coordinator_accuracy"] is None or abs(result["coordinator_accuracy"] - result["pooled_accuracy"]) > 1e-9:
                        checks["coordinator_accuracy_mismatches"] += 1
                    if not result["train_seconds_recorded"]:
                        checks["train_seconds_missing"] += 1
                    if eps is not None:
                        checks["epsilon_reported"] += [result["epsilon_reported"][h] for h in sorted(data)]
                        checks["epsilon_recomputed"] += [result["epsilon_recomputed"][h] for h in sorted(data)]
                    log.info("seed %d %s: mean %.3f pooled %.3f auc %.3f (%.1f s)", seed, key, result["mean_accuracy"],
                             result["pooled_accuracy"], result["pooled_auc"], time.monotonic() - t0)
        finally:
            if anvil is not None:
                anvil.stop()

    table = []
    for key, results in runs.items():
        method, _, epsilon = key.partition("+dp:")
        table.append({
            "method": method,
            "epsilon": float(epsilon) if epsilon else None,
            "runs": len(results),
            "mean_accuracy": _summary([r["mean_accuracy"] for r in results]),
            "pooled_accuracy": _summary([r["pooled_accuracy"] for r in results]),
            "pooled_auc": _summary([r["pooled_auc"] for r in results]),
        })
    reported, recomputed = checks["epsilon_reported"], checks["epsilon_recomputed"]
    worst = max((abs(a - b) / b for a, b in zip(reported, recomputed)), default=0.0)
    headline_eps = 3.0 if 3.0 in epsilons else epsilons[0]
    dp_row = next(r for r in table if r["method"] == "fedavg" and r["epsilon"] == headline_eps)
    best_dp = max((r for r in table if r["epsilon"] == headline_eps), key=lambda r: r["pooled_accuracy"]["mean"])
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
        f"dp{headline_eps:g}_fedavg_mean_accuracy": dp_row["mean_accuracy"]["mean"],
        f"dp{headline_eps:g}_fedavg_pooled_accuracy": dp_row["pooled_accuracy"]["mean"],
        "pooled_nonprivate_mean_accuracy": pooled_row["mean_accuracy"]["mean"],
        "pooled_nonprivate_pooled_accuracy": pooled_row["pooled_accuracy"]["mean"],
        "epsilon_reported": round(max(reported, default=0.0), 4),
        "epsilon_recomputed": round(max(recomputed, default=0.0), 4),
        "epsilon_max_relative_difference": round(worst, 6),
        "epsilon_agree": worst <= 0.10,
        "coordinator_accuracy_mismatches": checks["coordinator_accuracy_mismatches"],
        "train_seconds_missing": checks["train_seconds_missing"],
        "table": table,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    if write_docs:
        write_benchmarks_page(result)
    return result


def _cell(summary: dict) -> str:
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def write_benchmarks_page(result: dict, path: Path = DOCS_PAGE) -> Path:
    s = result["settings"]
    lines = [
        "# Benchmarks",
        "",
        "## Training: FLamby Fed-Heart-Disease (`twinledger bench training --json`)",
        "",
        f"Generated by `deploy/bench_training.py` in {result['wall_seconds']:.0f} s: {result['seeds']} seeds, "
        f"epsilon per hospital {', '.join(f'{e:g}' for e in result['epsilons'])}, delta {result['delta']:g}. "
        "Logistic regression on FLamby's split (66/34 per hospital, stratified, random_state=43; features "
        "standardised with each hospital's own training statistics). Accuracy at threshold 0.5; mean ± std over "
        "seeds. *Mean accuracy* is the mean of the four hospitals' test accuracies; *pooled* is on the union of "
        "the test sets.",
        "",
        "Federated rows run the real coordinator (`StudyRun`) and the real hospital ClientApp on anvil with the "
        "contracts deployed and every patient consenting; only the message transport is in-process (see the "
        "module docstring). Local and pooled rows train the same model with the node's plain SGD in one process.",
        "",
        "Every variant's settings were tuned with grids of the same kind (learning rate, epochs or local epochs, "
        "batch size or clipping norm; 3 seeds) on a validation split carved from the hospitals' training data "
        "(75/25 stratified), never on the test sets: `python -m deploy.tune_training`.",
        "",
        f"Local: {s['silo_epochs']} epochs, learning rate {s['silo_learning_rate']:g}, batch {s['silo_batch_size']}. "
        f"Pooled: {s['central_epochs']} epochs, learning rate {s['central_learning_rate']:g}, batch "
        f"{s['central_batch_size']}. "
        f"FedAvg non-private: {s['rounds']} rounds × {s['local_epochs']} local epochs, learning rate "
        f"{s['learning_rate']:g}, batch {s['batch_size']}. "
        f"DP-SGD: {s['dp_rounds']} rounds × {s['dp_local_epochs']} local epochs, learning rate "
        f"{s['dp_learning_rate']:g}, expected batch {s['dp_batch_size']} (Poisson), clipping norm "
        f"{s['dp_max_grad_norm']:g}; {s['adaptive_strategy']} server learning rate {s['server_learning_rate']:g}.",
        "",
        "| method | epsilon | mean accuracy | pooled accuracy | pooled AUC | FLamby mean / pooled (non-private) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["table"]:
        flamby = FLAMBY.get(row["method"]) if row["epsilon"] is None else None
        epsilon = "∞ (no DP)" if row["epsilon"] is None else f"{row['epsilon']:g}"
        published = f"{flamby[0]:.3f} / {flamby[1]:.3f}" if flamby else ""
        lines.append(
            f"| {row['method']} | {epsilon} | {_cell(row['mean_accuracy'])} | {_cell(row['pooled_accuracy'])} | "
            f"{_cell(row['pooled_auc'])} | {published} |"
        )
    lines += [
        "",
        f"Privacy accounting cross-check: each DP run's per-hospital epsilon as the node reported it (Opacus RDP) "
        f"and recomputed from the node's logged steps with Google's `dp-accounting` RDP accountant: largest "
        f"reported {result['epsilon_reported']:g}, largest recomputed {result['epsilon_recomputed']:g}, largest "
        f"relative difference {result['epsilon_max_relative_difference']:.2%}.",
        "",
        "Tuning (`python -m deploy.tune_training`, November 2026; validation pooled accuracy, 3 seeds): pooled "
        "0.802 (48 settings), local 0.664 (48, mean over the four hospitals' models), FedAvg non-private 0.791 "
        "(36), FedAvg DP-SGD at epsilon 3 0.786 (27), FedAdam/FedYogi server learning rate over those DP settings "
        "0.808 (8; FedAdam 0.3). The DP settings used before had been chosen with this benchmark, which evaluates "
        "on the test sets; re-tuned on the validation split, the same DP settings win. The non-private rows "
        "used to run untuned settings; they are now tuned the same way. Trying to raise DP accuracy further "
        "(FedAvg DP at epsilon 3 with 5, 10 or 20 rounds and per-round learning-rate decay 1, 0.9 or 0.8; the "
        "noise grows with the rounds at a fixed budget) gave at best the same validation accuracy (0.786, 20 rounds, "
        "decay 0.8) as 5 rounds without decay, so the benchmark keeps 5 rounds.",
        "",
        "Reading the table: with every variant tuned the same way, the DP rows still match or slightly exceed the "
        "non-private federated and pooled rows on the test sets (November 2026 run: pooled accuracy 0.753 for FedAvg "
        "DP-SGD at epsilon 3 against 0.744 for FedAvg and 0.741 for pooled training). The differences are within about "
        "one standard deviation over seeds, one pooled test patient is 0.4 % of pooled accuracy, and the validation "
        "split (123 patients) cannot separate settings more finely than that; with a 14-parameter model, clipping "
        "acts much like regularisation. Neither reaches FLamby's best non-private federated pooled accuracy (0.779).",
        "",
        "FLamby's figures: du Terrail et al., *FLamby: Datasets and Benchmarks for Cross-Silo Federated Learning "
        "in Realistic Healthcare Settings*, NeurIPS 2022 Datasets and Benchmarks (logistic regression, mean of "
        "5 seeds; their hyperparameters and number of updates differ from ours). FLamby's DP-SGD example "
        "(FedAvg, \"epsilon 1\", mean accuracy about 0.685) under-counts its privacy spending; its real epsilon is "
        "about 1.5 to 4.1. Data: UCI Heart Disease (Janosi, Steinbrunn, Pfisterer, Detrano, 1988), CC BY 4.0.",
        "",
    ]
    text = "\n".join(lines)
    # Other benchmarks' sections (`## Overhead ...`, written by deploy/bench_overhead.py) are kept.
    if path.exists():
        old = path.read_text()
        marker = old.find("\n## Overhead")
        if marker >= 0:
            text = text.rstrip("\n") + "\n" + old[marker:]
    path.write_text(text)
    return path
