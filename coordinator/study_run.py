"""One training run of a study, as the coordinator drives it over Flower's Grid.

A round goes through five phases, one method each:

- pin: the block `confirmations` behind the chain's head, with its hash; every node reads consent and study
  status at that block (and refuses a block that is not its chain's);
- train: send (study, round, block, global weights) to every node and collect the replies;
- aggregate: average the replies of the nodes that trained (FedAvg, weighted by examples, or the server
  optimiser of FedAdam or FedYogi applied to that average: option `strategy`); with `secure_aggregation` these two
  phases are Flower's SecAgg+ protocol (coordinator/secure_round.py): only the weighted sum is ever unmasked;
- evaluate: in the rounds the run evaluates (`evaluate_rounds`, default the last), every node evaluates the new
  global model once, at the same block, on its consented test patients; their noisy (charged) sums add up;
- anchor: record the round on chain: pinned block, model hash and each hospital's commitment to the pseudonyms
  it used in both phases.
A node that refuses or fails is reported by name and reason; the round goes on with the others. Training must
reply by 3/4 of `round-timeout-s` after the round pinned its block, evaluation by all of it; a node silent in a
phase is sent nothing more that round, and before each round the node set is taken again (coordinator/node_set.py:
dead nodes out, restarted ones back, the run ends when fewer than `round-min-nodes` hospitals are left). The report
(coordinator/report.py) is saved after training and after each round so that operators can watch it.

Who a reply comes from is learnt from authentication, never from what a node says about itself:

- a node's hospital is the one whose node key on chain is the key the node authenticated to the SuperLink
  with (`grid.get_nodes()` names it in the deployment engine). Once any node's key is a hospital's on chain,
  a node whose key is not is sent nothing (reported). A Grid that names no keys (the in-process grids of tests
  and benchmarks), or hospitals that recorded no node keys: identity rests on the reply signatures alone;
- every train and evaluate reply carries its hospital's EIP-712 signature over a RoundReply. A reply is
  dropped, and reported, unless its signer is an active hospital at the pinned block (and the node's
  hospital where that is known), it answers this round (study, round, pinned block, phase) and the model
  sent this round, its weights or metrics are the ones signed, and so are its examples, commitment and
  epsilon; a second reply signed by the same hospital in a phase is dropped too. Commitments are keyed by
  the verified signer, the anchor names only verified hospitals, and the signed replies are kept in the
  round's record so that an auditor can verify them again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy.fedopt import FedOpt

from contracts.ledger import Ledger, LedgerError
from coordinator import secure_round
from coordinator.accounts import settle_accounts
from coordinator.node_set import NodeSet, is_absent, phase_deadline
from coordinator.run_options import RunOptions, make_strategy
from coordinator.replies import ReplyRejected, check_reply, split_replies
from coordinator.report import HospitalSummary, RoundRecord, RunReport, SignedReply, StudySummary
from federation import monitoring, protocol
from federation.commitment import combined_commitment, model_hash
from federation.ids import Digest, hex0x
from federation.protocol import RoundConfig
from federation.tasks import get_task
from federation.tasks.metrics import round_metrics

log = logging.getLogger("twinledger.coordinator")
REPLY_POLL_S = 0.25  # seconds between requests for the nodes' replies (flwr's send_and_receive: 3)


def _finite_or_none(value: float) -> float | None:
    """A non-private study reports epsilon as infinity; JSON has no infinity, so the report says null."""
    return value if math.isfinite(value) else None


@dataclass
class RoundState:
    """What one round carries from phase to phase."""

    config: RoundConfig
    record: RoundRecord
    started: float = field(default_factory=time.monotonic)
    train_errors: dict[str, str] = field(default_factory=dict)
    train_commitments: dict[str, Digest] = field(default_factory=dict)  # by hospital account
    commitments: dict[str, Digest] = field(default_factory=dict)  # what the anchor holds, by hospital account
    examples: int = 0  # test patients evaluated
    evaluated_digest: Digest | None = None  # model hash of the global model sent for evaluation


class StudyRun:
    def __init__(self, grid: Grid, ledger: Ledger, options: RunOptions, run_dir: Path):
        self.grid = grid
        self.ledger = ledger
        self.options = options
        self.run_dir = run_dir
        self.terms = ledger.study(options.study_id)
        self.task = get_task(self.terms.task_id)
        self.report = RunReport(study=StudySummary.of(self.terms, self.task.headline.as_dict(), self.task.aggregation_weight))
        self.hospitals: dict[int, HospitalSummary] = {}  # by Flower node id; the same objects as in the report
        self.hospital_of: dict[int, str] = {}  # Flower node id -> hospital account, from the node's authenticated key
        self.excluded: dict[str, str] = {}  # nodes sent nothing, by name, and why
        self.nodes = NodeSet(self)  # who takes part in each round
        self.round_started: float | None = None  # the phases' deadlines count from it (node_set.phase_deadline)
        self.strategy, self.evaluated_rounds = make_strategy(options), options.evaluated_rounds(self.terms.rounds)
        self._saving = threading.Lock()  # the SuperExec watch (coordinator/server_app.py) may end the run meanwhile

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report.json"

    def save_report(self) -> None:
        with self._saving:
            self.report.save(self.report_path)

    def fail(self, message: str) -> bool:
        """Mark the run failed in its report (the ServerApp calls this before it re-raises); the first final
        word stands. True when this call ended the run."""
        with self._saving:
            ended = self.report.status == "running"
            if ended:
                self.report.status, self.report.message = "failed", message
            self.report.save(self.report_path)
        return ended

    # ---- the run ----

    def run(self) -> ArrayRecord:
        torch.manual_seed(self.options.seed)
        arrays = ArrayRecord(self.task.build_model().state_dict())
        node_ids = self.nodes.start()
        self.save_report()
        if (rounds := min(self.options.num_rounds, self.terms.rounds)) < self.options.num_rounds:
            log.warning("the study allows %d rounds; running %d", self.terms.rounds, rounds)
        anchored = [r for r in range(1, rounds + 1) if self.ledger.anchor_of(self.options.study_id, r) is not None]
        if anchored:
            # Checked before any node spends privacy budget on a round that could not be anchored.
            raise RuntimeError(
                f"rounds {anchored} of this study are already anchored on chain: a study's rounds run once; "
                "propose a new study to train again"
            )
        for round_number in range(1, rounds + 1):
            if round_number > 1:  # who left, who came back (coordinator/node_set.py)
                node_ids = self.nodes.for_round(round_number)
            arrays = self.run_round(round_number, node_ids, arrays)
        settle_accounts(self, node_ids)
        # The model first: a report that says "finished" always has its model next to it.
        torch.save(arrays.to_torch_state_dict(), self.run_dir / "model.pt")
        with self._saving:
            if self.report.status == "running":  # not ended meanwhile (its SuperExec died)
                self.report.status = "finished"
        self.save_report()
        return arrays

    def run_round(self, round_number: int, node_ids: list[int], arrays: ArrayRecord) -> ArrayRecord:
        state = self.pin(round_number)
        self.round_started = state.started
        log.info("round %d: pinned block %d; training on %d node(s)", round_number, state.config.block, len(node_ids))
        if self.options.secure_aggregation and len(node_ids) >= secure_round.MIN_NODES:
            arrays = secure_round.train_and_aggregate(self, state, node_ids, arrays)
        else:
            arrays = self.aggregate(state, self.train(state, node_ids, arrays), arrays)
        state.record.training_seconds = round(time.monotonic() - state.started, 2)
        state.record.status = "evaluating"
        self.report.rounds.append(state.record)
        self.save_report()  # operators (and the demo) see training results before evaluation ends
        self.evaluate(state, [n for n in node_ids if n not in self.nodes.silent], arrays)
        self.anchor(state, arrays)
        state.record.seconds = round(time.monotonic() - state.started, 2)
        state.record.status = "done"
        self.save_report()
        monitoring.round_ended(completed=state.record.anchor_block is not None)
        headline = self.task.headline.name
        value = state.record.metrics.get(headline)
        log.info(
            "round %d done in %.1f s: %s %s on %d test patients; used %s",
            round_number, state.record.seconds, headline, f"{value:.3f}" if value is not None else "n/a",
            state.examples, state.record.used)
        return arrays

    # ---- the phases of a round ----

    def pin(self, round_number: int) -> RoundState:
        """Pin the block `confirmations` behind the chain's head: every node reads consent and the study's status
        there, and refuses the round unless its chain has the block whose hash the round config carries."""
        block = max(self.ledger.block_number() - self.options.confirmations, 0)
        config = RoundConfig(
            study_id=self.options.study_id, round=round_number, block=block, block_hash=self.ledger.block_hash(block),
            local_epochs=self.options.local_epochs, learning_rate=self.options.learning_rate,
            batch_size=self.options.batch_size, max_grad_norm=self.options.max_grad_norm,
            evaluations=len(self.evaluated_rounds))
        record = RoundRecord(round=round_number, block=block, status="training")
        record.set_report_keys(self.task.report_keys)
        return RoundState(config=config, record=record)

    def train(self, state: RoundState, node_ids: list[int], arrays: ArrayRecord) -> list[Message]:
        """Every node trains on its consented patients; returns the replies of those that did."""
        content = RecordDict({protocol.WEIGHTS: arrays, protocol.ROUND_CONFIG: state.config.to_record()})
        replies = self._send(node_ids, MessageType.TRAIN, content, str(state.config.round))
        return self.count_trained(state, node_ids, replies, model_hash(arrays.to_torch_state_dict()))

    def count_trained(self, state: RoundState, node_ids: list[int], replies: list[Message], sent: Digest, *,
                      masked: bool = False) -> list[Message]:
        """The train replies whose signature holds, counted in the round's record (`masked`: secure aggregation's)."""
        answered, errors = self._split(node_ids, replies, "train")
        state.train_errors.update(errors)
        trained = []
        for reply, signer in self._verified(state, answered, "train", sent, state.train_errors, masked=masked):
            trained.append(reply)
            usage, metrics = reply.content[protocol.USAGE], reply.content[protocol.METRICS]
            name = self._name(reply.metadata.src_node_id)
            epsilon = _finite_or_none(float(metrics["epsilon"]))
            state.record.used[name] = int(usage["used"])
            state.record.epsilon[name] = epsilon
            if "train-seconds" in metrics:  # the node's wall time around its training (gate, budget, DP-SGD)
                state.record.train_seconds[name] = round(float(metrics["train-seconds"]), 3)
            state.train_commitments[signer] = Digest.parse(usage["commitment"])
            hospital = self.hospitals.get(reply.metadata.src_node_id)
            if hospital:
                hospital.epsilon_spent = epsilon
                hospital.epsilon_budget = float(metrics["epsilon-budget"])
                hospital.add_release(state.config.round, "train", epsilon)
        return trained

    def aggregate(self, state: RoundState, trained: list[Message], arrays: ArrayRecord) -> ArrayRecord:
        """The strategy's new global model from the trained replies; the old one when no node trained."""
        if not trained:
            log.warning("round %d: no node trained; the global model is unchanged", state.config.round)
            return arrays
        if isinstance(self.strategy, FedOpt):
            # FedOpt keeps the global model it sent in configure_train, which StudyRun does not call.
            self.strategy.current_arrays = {key: array.numpy() for key, array in arrays.items()}
        new_arrays, _ = self.strategy.aggregate_train(state.config.round, trained)
        if new_arrays is None:
            return arrays
        # FedOpt's update can come back as float64: keep the model's own dtypes (and model hash).
        model = self.task.build_model()
        model.load_state_dict(new_arrays.to_torch_state_dict())
        return ArrayRecord(model.state_dict())

    def evaluate(self, state: RoundState, node_ids: list[int], arrays: ArrayRecord) -> None:
        """Every node evaluates the global model on its consented test patients (in an evaluated round)."""
        content = RecordDict({protocol.WEIGHTS: arrays, protocol.ROUND_CONFIG: state.config.to_record()})
        sent_to = node_ids if state.config.round in self.evaluated_rounds else []  # else: training commitments only
        replies = self._send(sent_to, MessageType.EVALUATE, content, str(state.config.round)) if sent_to else []
        answered, eval_errors = self._split(sent_to, replies, "evaluate")
        state.evaluated_digest = model_hash(arrays.to_torch_state_dict())
        record, node_sums = state.record, {}
        train_commitments = dict(state.train_commitments)
        for reply, account in self._verified(state, answered, "evaluate", state.evaluated_digest, eval_errors):
            usage, metrics = reply.content[protocol.USAGE], reply.content[protocol.METRICS]
            record.test_used[self._name(reply.metadata.src_node_id)] = int(usage["used"])
            state.examples += int(metrics["num-examples"])
            node_sums[self._name(reply.metadata.src_node_id)] = dict(metrics)
            hospital = self.hospitals.get(reply.metadata.src_node_id)
            if hospital:
                hospital.consented = int(metrics["consented"])  # noisy: a charged release
                if "epsilon" in metrics:  # evaluation is charged: the study's epsilon after it
                    hospital.epsilon_spent = _finite_or_none(float(metrics["epsilon"]))
                    hospital.add_release(state.config.round, "evaluate", hospital.epsilon_spent)
            evaluate_commitment = Digest.parse(usage["commitment"])
            state.commitments[account] = combined_commitment(train_commitments.pop(account, b""), evaluate_commitment)
        for account, train_commitment in train_commitments.items():  # trained but did not evaluate
            state.commitments[account] = combined_commitment(train_commitment, b"")
        record.errors = {
            name: "; ".join(f"{phase}: {errors[name]}"
                            for phase, errors in (("train", state.train_errors), ("evaluate", eval_errors))
                            if name in errors)
            for name in sorted(set(state.train_errors) | set(eval_errors))
        }
        record.errors.update(self.excluded)
        if state.examples:
            # Every node's sums added up, then the task's metrics: weighted by examples, exactly; and each node's.
            try:
                record.metrics, record.hospital_metrics, record.subgroup_metrics = round_metrics(self.task, node_sums)
            except (KeyError, ValueError, TypeError, ZeroDivisionError) as exc:
                record.errors["coordinator"] = f"evaluation replies lack the task's sums: {exc!r}"
            record.set_report_keys(self.task.report_keys)

    def anchor(self, state: RoundState, arrays: ArrayRecord) -> None:
        """Record the round on chain: pinned block, model hash, each hospital's commitment."""
        record = state.record
        digest = state.evaluated_digest or model_hash(arrays.to_torch_state_dict())
        record.model_hash = str(digest)
        if not state.commitments:
            record.errors["coordinator"] = "round not anchored: no node used any data"
            log.warning("round %d: no node used any data; nothing to anchor", record.round)
            return
        try:
            receipt = self.ledger.anchor_round(
                self.options.study_id, record.round, pinned_block=state.config.block, model_hash=digest,
                commitments=state.commitments,
            )
            record.anchor_block = receipt["blockNumber"]
        except LedgerError as exc:
            record.errors["coordinator"] = f"round not anchored: {exc}"
            log.error("round %d could not be anchored: %s", record.round, exc)

    # ---- messages ----

    def _name(self, node_id: int) -> str:
        """The hospital's name; for a node not yet identified, the name its authenticated account has in this
        run (a restarted SuperNode) or that account; "node N" only for a node nothing is known of."""
        hospital = self.hospitals.get(node_id)
        if hospital is not None:
            return hospital.name
        account = self.hospital_of.get(node_id)
        if account is not None:
            return next((h.name for h in self.hospitals.values() if h.account == account), f"hospital {account}")
        return f"node {node_id}"

    def _send(self, node_ids: list[int], message_type: str, content: RecordDict, group: str, *,
              timeout_s: float | None = None) -> list[Message]:
        messages = [
            Message(content, dst_node_id=node_id, message_type=message_type, group_id=group) for node_id in node_ids
        ]
        return self.exchange(messages, timeout_s=timeout_s)

    def exchange(self, messages: list[Message], *, timeout_s: float | None = None) -> list[Message]:
        message_type, group = messages[0].metadata.message_type, messages[0].metadata.group_id
        # Grid.send_and_receive (flwr 1.41) asks the SuperLink for replies every 3 s; asking every REPLY_POLL_S
        # ends the phase within a fraction of a second of the last reply. Within a round, the phase's deadline
        # counts from the round's start (node_set.phase_deadline), so that the round ends within the timeout.
        if timeout_s is not None or self.round_started is None:
            deadline = time.monotonic() + (self.options.round_timeout_s if timeout_s is None else timeout_s)
        else:
            deadline = phase_deadline(started=self.round_started, round_timeout_s=self.options.round_timeout_s,
                                      message_type=message_type)
        # A message expires with its phase: a node that comes back later (restarted, resumed) never works, and
        # spends budget, on a phase whose replies are no longer awaited.
        ttl = max(deadline - time.monotonic(), 1.0)
        for message in messages:
            message.metadata.ttl = ttl
        destination = dict(zip(self.grid.push_messages(messages), [m.metadata.dst_node_id for m in messages]))
        waiting = set(destination)
        replies: list[Message] = []
        while waiting:  # replies already there count, even when the deadline has passed
            for reply in self.grid.pull_messages(waiting):
                node_id = destination.get(reply.metadata.reply_to_message_id)
                if reply.has_error() and node_id is not None and reply.metadata.src_node_id != node_id:
                    # The SuperLink answers for a node it lost ("node unavailable") under its own node id.
                    reply.metadata.__dict__["_src_node_id"] = node_id
                replies.append(reply)
                waiting.discard(reply.metadata.reply_to_message_id)
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(REPLY_POLL_S)
        if message_type in (MessageType.TRAIN, MessageType.EVALUATE):
            absent = [destination[m] for m in waiting] + [r.metadata.src_node_id for r in replies if is_absent(r)]
            self.nodes.mark_silent(absent, phase=message_type, round_number=int(group) if group.isdigit() else 0)
        return replies

    def _verified(self, state: RoundState, replies: list[Message], phase: str, sent: Digest,
                  errors: dict[str, str], *, masked: bool = False) -> list[tuple[Message, str]]:
        """The replies whose signature holds, each with its signer (the hospital account it counts for); every
        other reply is dropped, with its reason in `errors` (by node name). Replies are taken in node id order
        (a second reply signed by the same hospital is the one from the higher node id). Keeps the signed
        replies in the round's record."""
        verified, signers = [], set()
        for reply in sorted(replies, key=lambda r: r.metadata.src_node_id):  # in arrival order, "first" would be luck
            name = self._name(reply.metadata.src_node_id)
            try:
                signed, signature, signer = check_reply(
                    reply, phase=phase, config=state.config, sent=sent, ledger=self.ledger,
                    authenticated=self.hospital_of.get(reply.metadata.src_node_id), masked=masked)
                if signer in signers:
                    raise ReplyRejected(f"a second reply signed by hospital {signer} in this phase")
            except ReplyRejected as rejected:
                errors[name] = f"reply dropped: {rejected}"
                log.warning("%s: %s reply dropped: %s", name, phase, rejected)
                continue
            signers.add(signer)
            hospital = self.hospitals.get(reply.metadata.src_node_id)
            if hospital is not None and hospital.account is None:
                hospital.account = signer  # no key binding: the signer of its first verified reply
            state.record.replies.append(SignedReply(hospital=signer, node=name, reply=signed.as_dict(),
                                                    signature=hex0x(signature)))
            verified.append((reply, signer))
        return verified

    def _split(self, node_ids: list[int], replies: list[Message], phase: str) -> tuple[list[Message], dict[str, str]]:
        return split_replies(node_ids, replies, phase, name_of=self._name, timeout_s=self.options.round_timeout_s)
