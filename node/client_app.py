"""The hospital node's Flower ClientApp: turns the coordinator's messages into node work and back.

The SuperNode is started with `--node-config 'node-home="/path/to/home"'`; everything else the node
needs (hospital, chain, keys, database) is in that home's node.toml. The work itself is the node core's
(node/service.py HospitalNode, no Flower in it); each handler here reads the request, calls it and builds
the reply. A refusal (the node used no data) becomes an error reply with the protocol's code and reason
(`@refusals_as_errors`), and is kept in the node's store for hospital IT. Every train and evaluate reply carries
the hospital's signature (its chain key) over a `RoundReply`: what round it answers, the model it received, what
it sends back, how many examples it used, its commitment and its epsilon; the coordinator drops a reply whose
signature does not hold.

Secure aggregation (Flower's SecAgg+, on unless the run turns it off): a train message that carries SecAgg+'s
configuration goes through Flower's `secaggplus_mod` (`secure_aggregation` below). Its four stages run here; in the
third the train handler trains as always and answers in Flower's legacy FitRes layout, the mod quantises, weights
and masks the weights and clears every array from the reply, and the hospital signs the masked vector
(`protocol.masked_digest`) with the round's numbers: the coordinator never receives this hospital's weights, only
its masked vector, which it can add up with the others' but not read.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from contextlib import contextmanager

import torch
from eth_account import Account
from flwr.app import ArrayRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat

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


FITINS_CONFIG = "fitins.config"  # Flower's legacy FitIns layout: how SecAgg+ sends the round (and its weights)


def read_request(msg: Message) -> tuple[RoundConfig, dict[str, torch.Tensor]]:
    """The round's configuration and the global model's weights, from our own layout or (secure aggregation) from
    Flower's legacy FitIns layout; a refusal when either is malformed."""
    try:
        if FITINS_CONFIG in msg.content.config_records:
            fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
            config = RoundConfig.from_record(msg.content.config_records[FITINS_CONFIG])
            names = json.loads(str(fitins.config[protocol.WEIGHT_NAMES]))
            arrays = parameters_to_ndarrays(fitins.parameters)
            state = {str(name): torch.from_numpy(array.copy()) for name, array in zip(names, arrays, strict=True)}
        else:
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


# Nodes whose train reply waits for the hospital's signature over its masked vector, by request message id.
_unsigned: dict[str, HospitalNode] = {}


class _TrainRefused(Exception):
    def __init__(self, error: Error):
        self.error = error


def secure_aggregation(msg: Message, context: Context, call_next) -> Message:
    """Flower's SecAgg+ client side for a train message that carries its configuration (any other message goes
    straight to its handler): a refusal of the train handler stays the refusal it was (an error reply with its
    code and reason), the masked vector is signed by the hospital, and a malformed protocol message is a
    bad request."""
    if msg.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)

    def train_or_raise(inner: Message, inner_context: Context) -> Message:
        reply = call_next(inner, inner_context)
        if reply.has_error():
            raise _TrainRefused(reply.error)
        return reply

    try:
        reply = secaggplus_mod(msg, context, train_or_raise)
    except _TrainRefused as refused:
        return Message(refused.error, reply_to=msg)
    except (KeyError, ValueError, TypeError) as exc:
        log.warning("secure aggregation message refused: %s", exc)
        return Message(Error(protocol.BAD_REQUEST, f"bad secure aggregation message: {exc!r}"), reply_to=msg)
    finally:
        node = _unsigned.pop(msg.metadata.message_id, None)
    if node is not None and not reply.has_error():
        content = reply.content
        unsigned = RoundReply.from_record(content.config_records[protocol.ROUND_REPLY])
        masked = content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
        for key, record in signed_usage(node, dataclasses.replace(
                unsigned, reply_digest=protocol.masked_digest(masked))).items():
            content[key] = record
    return reply


@app.train(mods=[secure_aggregation])
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
    if FITINS_CONFIG in msg.content.config_records:
        # Secure aggregation: the weights in the order they came, for SecAgg+ to weight by num-examples and mask;
        # the hospital signs once the masked vector exists (`secure_aggregation`).
        fitres = FitRes(status=Status(Code.OK, "trained"), num_examples=outcome.num_examples, metrics={},
                        parameters=ndarrays_to_parameters([outcome.state[name].numpy() for name in state]))
        content = compat.fitres_to_recorddict(fitres, keep_input=True)
        content[protocol.ROUND_REPLY] = reply.to_record()
        _unsigned[msg.metadata.message_id] = node
    else:
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
