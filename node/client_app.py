"""The hospital node's Flower ClientApp: turns the coordinator's messages into node work and back.

The SuperNode is started with `--node-config 'node-home="/path/to/home"'`; everything else the node
needs (hospital, chain, keys, database) is in that home's node.toml. The work itself is the node core's
(node/service.py HospitalNode, no Flower in it); each handler here reads the request, calls it and builds
the reply. A refusal (the node used no data) becomes an error reply with the protocol's code and reason
(`@refusals_as_errors`), and is kept in the node's store for hospital IT. Every train and evaluate reply carries
the hospital's signature (its chain key) over a `RoundReply`: what round it answers, the model it received, what
it sends back, how many examples it used, its commitment and its epsilon; the coordinator drops a reply whose
signature does not hold.
"""

from __future__ import annotations

import functools
import logging
import time
from contextlib import contextmanager

import torch
from eth_account import Account
from flwr.app import ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from contracts.ledger import load_key
from federation import protocol
from federation.commitment import model_hash
from federation.ids import StudyId
from federation.protocol import RoundConfig, RoundReply
from node.consent_gate import Refusal
from node.service import HospitalNode
from node.settings import NodeSettings, SettingsError
from node.store import RoundRefusal, StoreUnavailable

app = ClientApp()
log = logging.getLogger("twinledger.node")


def refusals_as_errors(handler):
    """Answer a Refusal raised by the handler with an error reply carrying its protocol code."""

    @functools.wraps(handler)
    def answer(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except (Refusal, StoreUnavailable) as refusal:  # a database that fails: refused, nothing decrypted
            log.warning("refused: %s", refusal.reason)
            return Message(Error(refusal.code, refusal.reason), reply_to=msg)

    return answer


def read_request(msg: Message) -> tuple[RoundConfig, dict[str, torch.Tensor]]:
    """The round's configuration and the global model's weights; a refusal when either is malformed."""
    try:
        config = RoundConfig.from_record(msg.content[protocol.ROUND_CONFIG])
        state = msg.content[protocol.WEIGHTS].to_torch_state_dict()
    except (KeyError, ValueError, TypeError) as exc:
        raise Refusal(protocol.BAD_REQUEST, f"bad request, no data used: {exc}") from exc
    return config, state


def open_node(context: Context) -> HospitalNode:
    """The node core of this SuperNode's home (`--node-config node-home=...`)."""
    home = context.node_config.get("node-home")
    if not home:
        raise Refusal(protocol.BAD_REQUEST, "this SuperNode was started without --node-config node-home=...")
    try:
        return HospitalNode(NodeSettings.load(str(home)))
    except SettingsError as exc:
        raise Refusal(protocol.BAD_REQUEST, str(exc)) from exc


@contextmanager
def refusals_recorded(node: HospitalNode, config: RoundConfig, phase: str):
    """Keep a refusal for hospital IT (node console) before it goes on to become the error reply."""
    try:
        yield
    except Refusal as refusal:
        try:
            node.store.record_refusal(RoundRefusal(
                study_id=str(StudyId(config.study_id)), round=config.round, phase=phase, code=refusal.code,
                reason=refusal.reason[:500],
            ))
        except Exception as exc:  # noqa: BLE001 - a full disk must not turn a refusal into a crash
            log.warning("could not record the refusal: %s", exc)
        raise


def signed_usage(node: HospitalNode, reply: RoundReply) -> RecordDict:
    """What the node used in this phase, for the coordinator's anchor, and the hospital's signature over it:
    the RoundReply record and the usage record carrying the signature (by the hospital's chain key, the key of
    node.toml's hospital-key file that the node's ledger client holds)."""
    signature = node.ledger.sign_round_reply(reply)
    return RecordDict({
        protocol.ROUND_REPLY: reply.to_record(),
        protocol.USAGE: protocol.usage_record(
            hospital=node.settings.hospital, account=node.account, commitment=reply.commitment,
            used=reply.num_examples, phase=reply.phase, signature=signature,
        ),
    })


@app.train()
@refusals_as_errors
def train(msg: Message, context: Context) -> Message:
    """Train the global model on the patients consenting at the pinned block, with DP-SGD."""
    config, state = read_request(msg)
    node = open_node(context)

    # Gate, budget, DP-SGD; the node's own wall time for the coordinator's report
    started = time.perf_counter()
    with refusals_recorded(node, config, "train"):
        outcome = node.train(config, state)
    train_seconds = time.perf_counter() - started

    # num-examples is the noisy, charged training count (the aggregation weight); the training loss is not sent.
    metrics = MetricRecord({
        "num-examples": outcome.num_examples,
        "epsilon": outcome.epsilon_spent,
        "epsilon-budget": outcome.epsilon_budget,
        "train-seconds": train_seconds,
    })
    weights = ArrayRecord(outcome.state)
    reply = RoundReply(
        study_id=config.study_id, round=config.round, pinned_block=config.block, phase="train",
        model_digest=model_hash(state), reply_digest=model_hash(weights.to_torch_state_dict()),
        num_examples=outcome.num_examples, commitment=outcome.commitment,
        epsilon_milli=protocol.epsilon_milli(outcome.epsilon_spent),
    )
    content = signed_usage(node, reply)
    content[protocol.WEIGHTS] = weights
    content[protocol.METRICS] = metrics
    return Message(content, reply_to=msg)


@app.evaluate()
@refusals_as_errors
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the global model once on the test patients consenting at the pinned block; the sums and counts
    sent are the node's charged Gaussian release, and `epsilon` is the study's epsilon after it."""
    config, state = read_request(msg)
    node = open_node(context)

    with refusals_recorded(node, config, "evaluate"):
        outcome = node.evaluate(config, state)

    metrics = MetricRecord({
        "num-examples": outcome.num_examples,
        "consented": outcome.consented,
        "epsilon": outcome.epsilon_spent,
        **outcome.sums,  # the task's additive statistics, e.g. correct, loss-sum, positives
    })
    reply = RoundReply(
        study_id=config.study_id, round=config.round, pinned_block=config.block, phase="evaluate",
        model_digest=model_hash(state), reply_digest=protocol.metrics_digest(dict(metrics)),
        num_examples=outcome.num_examples, commitment=outcome.commitment,
        epsilon_milli=protocol.epsilon_milli(outcome.epsilon_spent),
    )
    content = signed_usage(node, reply)
    content[protocol.METRICS] = metrics
    return Message(content, reply_to=msg)


@app.query("identify")
def identify(msg: Message, context: Context) -> Message:
    """Which hospital this node is and how many patient records it holds; reads no clinical data."""
    try:
        node = open_node(context)
        account = Account.from_key(load_key(node.settings.hospital_key_file)).address  # no chain needed
        # Asked about a study (at the end of a run): also this node's own account of the epsilon spent on it.
        study = StudyId.parse(msg.content[protocol.ROUND_CONFIG]["study-id"]) if protocol.ROUND_CONFIG in msg.content else None
        identity = protocol.identity_record(
            hospital=node.settings.hospital, account=account, patients=len(node.store.patients()),
            study_id=study, epsilon_spent=node.epsilon_spent(study) if study is not None else None,
        )
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised into Flower
        return Message(Error(protocol.BAD_REQUEST, f"cannot identify this node: {exc}"), reply_to=msg)
    return Message(RecordDict({protocol.USAGE: identity}), reply_to=msg)
