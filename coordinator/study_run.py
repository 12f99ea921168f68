"""One training run of a study, as the coordinator drives it over Flower's Grid.

Each round pins the chain's current block, sends (study, round, block, global weights) to every node,
aggregates the replies of the nodes that trained (FedAvg, weighted by examples, or the server optimiser of
FedAdam or FedYogi applied to that average: run config `strategy`), evaluates the new
global model on every node's consented test patients at the same block, and anchors the round on
chain: pinned block, model hash and each hospital's commitment to the pseudonyms it used. A node that
refuses or fails is reported by name and reason; the round goes on with the others.
"""

from __future__ import annotations

import io
import math
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from eth_utils import keccak
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedYogi
from flwr.serverapp.strategy.fedopt import FedOpt

from contracts.ledger import Ledger, LedgerError, StudyTerms
from federation import protocol
from federation.protocol import RoundConfig
from federation.tasks import get_task
from federation.tasks.base import add_sums

log = logging.getLogger("twinledger.coordinator")
REPLY_POLL_S = 0.25  # seconds between requests for the nodes' replies (flwr's send_and_receive: 3)


@dataclass
class RunOptions:
    study_id: bytes
    num_rounds: int
    local_epochs: int = 2
    learning_rate: float = 0.1
    batch_size: int = 32
    max_grad_norm: float = 1.0
    round_timeout_s: float = 300.0
    min_nodes: int = 1
    wait_for_nodes_s: float = 120.0
    seed: int = 0
    strategy: str = "fedavg"  # "fedavg", "fedadam" or "fedyogi"
    server_learning_rate: float = 0.1  # eta of FedAdam and FedYogi; unused by FedAvg


STRATEGIES = {"fedavg": FedAvg, "fedadam": FedAdam, "fedyogi": FedYogi}


def make_strategy(options: RunOptions) -> FedAvg:
    """Flower's strategy of that name; only its aggregate_train is used (weighted by `num-examples`)."""
    try:
        strategy = STRATEGIES[options.strategy]
    except KeyError:
        raise ValueError(f"unknown strategy {options.strategy!r}; known: {', '.join(STRATEGIES)}") from None
    kwargs = {"eta": options.server_learning_rate} if issubclass(strategy, FedOpt) else {}
    return strategy(weighted_by_key="num-examples", arrayrecord_key=protocol.WEIGHTS, **kwargs)


@dataclass
class Hospital:
    name: str
    account: str
    patients: int
    consented: int | None = None
    epsilon_spent: float = 0.0
    epsilon_budget: float | None = None


@dataclass
class RunReport:
    """The run's report, rewritten after every round so that operators can watch it."""

    path: Path
    terms: StudyTerms
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    hospitals: dict[int, Hospital] = field(default_factory=dict)
    rounds: list[dict] = field(default_factory=list)
    metric: dict | None = None  # the task's headline metric (name, label, unit, scale), for the report page
    status: str = "running"
    message: str = ""

    def as_dict(self) -> dict:
        return {
            "status": self.status,
            "message": self.message,
            "started_at": self.started_at,
            "study": {
                "id": "0x" + self.terms.study_id.hex(),
                "purpose": self.terms.purpose,
                "task": self.terms.task_id,
                "epsilon_budget": self.terms.epsilon_budget,
                "delta": self.terms.delta,
                "rounds": self.terms.rounds,
                "metric": self.metric,
            },
            "hospitals": [
                {
                    "name": h.name,
                    "account": h.account,
                    "patients": h.patients,
                    "consented": h.consented,
                    "epsilon_spent": h.epsilon_spent,
                    "epsilon_budget": h.epsilon_budget if h.epsilon_budget is not None else self.terms.epsilon_budget,
                }
                for h in sorted(self.hospitals.values(), key=lambda h: h.name)
            ],
            "rounds": self.rounds,
        }

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=1))
        tmp.replace(self.path)


def _finite_or_none(value: float) -> float | None:
    """A non-private study reports epsilon as infinity; JSON has no infinity, so the report says null."""
    return value if math.isfinite(value) else None


def model_hash(arrays: ArrayRecord) -> bytes:
    buffer = io.BytesIO()
    state = arrays.to_torch_state_dict()
    for name in sorted(state):
        buffer.write(name.encode())
        buffer.write(state[name].detach().contiguous().numpy().tobytes())
    return keccak(buffer.getvalue())


class StudyRun:
    def __init__(self, grid: Grid, ledger: Ledger, options: RunOptions, run_dir: Path):
        self.grid = grid
        self.ledger = ledger
        self.options = options
        self.run_dir = run_dir
        self.terms = ledger.study(options.study_id)
        self.task = get_task(self.terms.task_id)
        self.report = RunReport(run_dir / "report.json", self.terms, metric=self.task.headline.as_dict())
        self.strategy = make_strategy(options)

    def _name(self, node_id: int) -> str:
        hospital = self.report.hospitals.get(node_id)
        return hospital.name if hospital else f"node {node_id}"

    def _send(self, node_ids: list[int], message_type: str, content: RecordDict, group: str) -> list[Message]:
        messages = [
            Message(content, dst_node_id=node_id, message_type=message_type, group_id=group) for node_id in node_ids
        ]
        # Grid.send_and_receive (flwr 1.41) asks the SuperLink for replies every 3 s; asking every REPLY_POLL_S
        # ends the phase within a fraction of a second of the last reply.
        waiting = set(self.grid.push_messages(messages))
        replies: list[Message] = []
        deadline = time.monotonic() + self.options.round_timeout_s
        while waiting and time.monotonic() < deadline:
            for reply in self.grid.pull_messages(waiting):
                replies.append(reply)
                waiting.discard(reply.metadata.reply_to_message_id)
            if waiting:
                time.sleep(REPLY_POLL_S)
        return replies

    def _split(self, node_ids: list[int], replies: list[Message], phase: str) -> tuple[list[Message], dict[str, str]]:
        ok, errors = [], {}
        answered = set()
        for reply in replies:
            node_id = reply.metadata.src_node_id
            answered.add(node_id)
            if reply.has_error():
                code = reply.error.code
                reason = reply.error.reason or "no reason given"
                errors[self._name(node_id)] = f"{protocol.ERROR_NAMES.get(code, f'error {code}')}: {reason}"
                log.warning("%s did not %s: %s", self._name(node_id), phase, errors[self._name(node_id)])
            else:
                ok.append(reply)
        for node_id in set(node_ids) - answered:
            errors[self._name(node_id)] = f"no reply within {self.options.round_timeout_s:g} s (node down?)"
            log.warning("%s did not reply to %s", self._name(node_id), phase)
        return ok, errors

    def wait_for_nodes(self) -> list[int]:
        deadline = time.monotonic() + self.options.wait_for_nodes_s
        while True:
            node_ids = sorted(self.grid.get_node_ids())
            if len(node_ids) >= self.options.min_nodes or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        if len(node_ids) < self.options.min_nodes:
            raise RuntimeError(
                f"only {len(node_ids)} node(s) connected after {self.options.wait_for_nodes_s:g} s; "
                f"{self.options.min_nodes} needed"
            )
        return node_ids

    def identify(self, node_ids: list[int]) -> None:
        replies = self._send(node_ids, f"{MessageType.QUERY}.identify", RecordDict(), "identify")
        for reply in replies:
            if reply.has_error():
                log.warning("node %s could not identify itself: %s", reply.metadata.src_node_id, reply.error.reason)
                continue
            identity = reply.content[protocol.USAGE]
            self.report.hospitals[reply.metadata.src_node_id] = Hospital(
                name=str(identity["hospital"]), account=str(identity["account"]), patients=int(identity["patients"])
            )
        log.info("hospitals in this run: %s", ", ".join(h.name for h in self.report.hospitals.values()))

    def run(self) -> ArrayRecord:
        torch.manual_seed(self.options.seed)
        arrays = ArrayRecord(self.task.build_model().state_dict())
        node_ids = self.wait_for_nodes()
        self.identify(node_ids)
        self.report.save()
        rounds = min(self.options.num_rounds, self.terms.rounds)
        if rounds < self.options.num_rounds:
            log.warning("the study allows %d rounds; running %d", self.terms.rounds, rounds)
        anchored = [r for r in range(1, rounds + 1) if self.ledger.anchor_of(self.options.study_id, r)]
        if anchored:
            # Checked before any node spends privacy budget on a round that could not be anchored.
            raise RuntimeError(
                f"rounds {anchored} of this study are already anchored on chain: a study's rounds run once; "
                "propose a new study to train again"
            )
        for round_number in range(1, rounds + 1):
            arrays = self.run_round(round_number, node_ids, arrays)
        # The model first: a report that says "finished" always has its model next to it.
        torch.save(arrays.to_torch_state_dict(), self.run_dir / "model.pt")
        self.report.status = "finished"
        self.report.save()
        return arrays

    def run_round(self, round_number: int, node_ids: list[int], arrays: ArrayRecord) -> ArrayRecord:
        started = time.monotonic()
        block = self.ledger.block_number()
        config = RoundConfig(
            study_id=self.options.study_id,
            round=round_number,
            block=block,
            local_epochs=self.options.local_epochs,
            learning_rate=self.options.learning_rate,
            batch_size=self.options.batch_size,
            max_grad_norm=self.options.max_grad_norm,
        )
        log.info("round %d: pinned block %d; training on %d node(s)", round_number, block, len(node_ids))
        content = RecordDict({protocol.WEIGHTS: arrays, protocol.ROUND_CONFIG: config.to_record()})
        trained, train_errors = self._split(node_ids, self._send(node_ids, MessageType.TRAIN, content, str(round_number)), "train")
        record = {"round": round_number, "block": block, **{key: None for key in self.task.report_keys},
                  "metrics": {}, "used": {}, "test_used": {}, "epsilon": {}, "train_seconds": {}, "errors": {}}
        train_commitments: dict[str, bytes] = {}
        for reply in trained:
            usage, metrics = reply.content[protocol.USAGE], reply.content[protocol.METRICS]
            hospital = self.report.hospitals.get(reply.metadata.src_node_id)
            name = self._name(reply.metadata.src_node_id)
            record["used"][name] = int(usage["used"])
            record["epsilon"][name] = _finite_or_none(float(metrics["epsilon"]))
            if "train-seconds" in metrics:  # the node's wall time around its training (gate, budget, DP-SGD)
                record["train_seconds"][name] = round(float(metrics["train-seconds"]), 3)
            train_commitments[str(usage["account"])] = bytes.fromhex(str(usage["commitment"])[2:])
            if hospital:
                hospital.epsilon_spent = _finite_or_none(float(metrics["epsilon"]))
                hospital.epsilon_budget = float(metrics["epsilon-budget"])
        if trained:
            if isinstance(self.strategy, FedOpt):
                # FedOpt keeps the global model it sent in configure_train, which StudyRun does not call.
                self.strategy.current_arrays = {key: array.numpy() for key, array in arrays.items()}
            new_arrays, _ = self.strategy.aggregate_train(round_number, trained)
            if new_arrays is not None:
                # FedOpt's update can come back as float64: keep the model's own dtypes (and model hash).
                model = self.task.build_model()
                model.load_state_dict(new_arrays.to_torch_state_dict())
                arrays = ArrayRecord(model.state_dict())
        else:
            log.warning("round %d: no node trained; the global model is unchanged", round_number)
        training_s = time.monotonic() - started
        record["status"] = "evaluating"
        self.report.rounds.append(record)
        self.report.save()  # operators (and the demo) see training results before evaluation ends

        content = RecordDict({protocol.WEIGHTS: arrays, protocol.ROUND_CONFIG: config.to_record()})
        evaluated, eval_errors = self._split(
            node_ids, self._send(node_ids, MessageType.EVALUATE, content, str(round_number)), "evaluate"
        )
        commitments: dict[str, bytes] = {}
        examples = 0
        node_sums = []
        for reply in evaluated:
            usage, metrics = reply.content[protocol.USAGE], reply.content[protocol.METRICS]
            name = self._name(reply.metadata.src_node_id)
            account = str(usage["account"])
            record["test_used"][name] = int(usage["used"])
            examples += int(metrics["num-examples"])
            node_sums.append(dict(metrics))
            hospital = self.report.hospitals.get(reply.metadata.src_node_id)
            if hospital:
                hospital.consented = int(metrics["consented"])
            evaluate_commitment = bytes.fromhex(str(usage["commitment"])[2:])
            commitments[account] = protocol.combined_commitment(train_commitments.pop(account, b""), evaluate_commitment)
        for account, train_commitment in train_commitments.items():  # trained but did not evaluate
            commitments[account] = protocol.combined_commitment(train_commitment, b"")
        record["errors"] = {
            name: "; ".join(f"{phase}: {errors[name]}" for phase, errors in (("train", train_errors), ("evaluate", eval_errors)) if name in errors)
            for name in sorted(set(train_errors) | set(eval_errors))
        }
        if examples:
            # Every node's sums added up, then the task's metrics: weighted by examples, exactly.
            try:
                record["metrics"] = self.task.summarise(add_sums(node_sums))
            except (KeyError, ValueError, TypeError, ZeroDivisionError) as exc:
                record["errors"]["coordinator"] = f"evaluation replies lack the task's sums: {exc!r}"
            record.update({key: record["metrics"].get(key) for key in self.task.report_keys})
        record["seconds"] = round(time.monotonic() - started, 2)
        record["training_seconds"] = round(training_s, 2)

        digest = model_hash(arrays)
        record["model_hash"] = "0x" + digest.hex()
        if not commitments:
            record["errors"]["coordinator"] = "round not anchored: no node used any data"
            log.warning("round %d: no node used any data; nothing to anchor", round_number)
        else:
            self._anchor(record, round_number, block, digest, commitments)
        record["status"] = "done"
        self.report.save()
        headline = self.task.headline.name
        value = record["metrics"].get(headline)
        log.info(
            "round %d done in %.1f s: %s %s on %d test patients; used %s",
            round_number, record["seconds"], headline, f"{value:.3f}" if value is not None else "n/a", examples,
            record["used"],
        )
        return arrays

    def _anchor(self, record: dict, round_number: int, block: int, digest: bytes, commitments: dict[str, bytes]) -> None:
        try:
            receipt = self.ledger.anchor_round(
                self.options.study_id, round_number, pinned_block=block, model_hash=digest, commitments=commitments
            )
            record["anchor_block"] = receipt["blockNumber"]
        except LedgerError as exc:
            record["errors"]["coordinator"] = f"round not anchored: {exc}"
            log.error("round %d could not be anchored: %s", round_number, exc)
