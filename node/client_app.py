"""The hospital node's Flower ClientApp: turns the coordinator's messages into node work and back.

The SuperNode is started with `--node-config 'node-home="/path/to/home"'`; everything else the node
needs (hospital, chain, keys, database) is in that home's node.toml.
"""

from __future__ import annotations

import logging
import time

from flwr.app import ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federation import protocol
from federation.protocol import RoundConfig
from node.consent_gate import Refusal
from node.service import HospitalNode
from node.settings import NodeSettings, SettingsError
from node.store import RoundRefusal

app = ClientApp()
log = logging.getLogger("twinledger.node")


def _node(context: Context) -> HospitalNode:
    home = context.node_config.get("node-home")
    if not home:
        raise Refusal(protocol.BAD_REQUEST, "this SuperNode was started without --node-config node-home=...")
    try:
        return HospitalNode(NodeSettings.load(str(home)))
    except SettingsError as exc:
        raise Refusal(protocol.BAD_REQUEST, str(exc)) from exc


def _handle(msg: Message, context: Context, work) -> Message:
    try:
        config = RoundConfig.from_record(msg.content[protocol.ROUND_CONFIG])
        state = msg.content[protocol.WEIGHTS].to_torch_state_dict()
    except (KeyError, ValueError, TypeError) as exc:
        return Message(Error(protocol.BAD_REQUEST, f"bad request, no data used: {exc}"), reply_to=msg)
    node = None
    try:
        node = _node(context)
        return Message(work(node, config, state), reply_to=msg)
    except Refusal as refusal:
        log.warning("refused: %s", refusal.reason)
        if node is not None:
            _record_refusal(node, config, msg.metadata.message_type.split(".")[0], refusal)
        return Message(Error(refusal.code, refusal.reason), reply_to=msg)


def _record_refusal(node: HospitalNode, config: RoundConfig, phase: str, refusal: Refusal) -> None:
    """Keep the refusal for hospital IT (node console); the coordinator is answered either way."""
    try:
        node.store.record_refusal(RoundRefusal(
            study_id="0x" + config.study_id.hex(), round=config.round, phase=phase, code=refusal.code,
            reason=refusal.reason[:500],
        ))
    except Exception as exc:  # noqa: BLE001 - a full disk must not turn a refusal into a crash
        log.warning("could not record the refusal: %s", exc)


def _usage(node: HospitalNode, commitment: bytes, used: int, phase: str):
    return protocol.usage_record(
        hospital=node.settings.hospital, account=node.account, commitment=commitment, used=used, phase=phase
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    def work(node: HospitalNode, config: RoundConfig, state) -> RecordDict:
        started = time.perf_counter()
        outcome = node.train(config, state)
        train_seconds = time.perf_counter() - started  # the node's own wall time: gate, budget, training
        return RecordDict(
            {
                protocol.WEIGHTS: ArrayRecord(outcome.state),
                protocol.METRICS: MetricRecord(
                    {
                        "num-examples": outcome.num_examples,
                        "epsilon": outcome.epsilon_spent,
                        "epsilon-budget": outcome.epsilon_budget,
                        "train-loss": outcome.mean_loss,
                        "train-seconds": train_seconds,
                    }
                ),
                protocol.USAGE: _usage(node, outcome.commitment, outcome.num_examples, "train"),
            }
        )

    return _handle(msg, context, work)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    def work(node: HospitalNode, config: RoundConfig, state) -> RecordDict:
        outcome = node.evaluate(config, state)
        return RecordDict(
            {
                protocol.METRICS: MetricRecord(
                    {
                        "num-examples": outcome.num_examples,
                        "consented": outcome.consented,
                        **outcome.sums,  # the task's additive statistics, e.g. correct, loss-sum, positives
                    }
                ),
                protocol.USAGE: _usage(node, outcome.commitment, outcome.num_examples, "evaluate"),
            }
        )

    return _handle(msg, context, work)


@app.query("identify")
def identify(msg: Message, context: Context) -> Message:
    """Which hospital this node is and how many patient records it holds; reads no clinical data."""
    try:
        node = _node(context)
        from eth_account import Account

        from contracts.ledger import load_key

        account = Account.from_key(load_key(node.settings.hospital_key_file)).address
        content = RecordDict(
            {
                protocol.USAGE: protocol.identity_record(
                    hospital=node.settings.hospital, account=account, patients=len(node.store.patients())
                )
            }
        )
        return Message(content, reply_to=msg)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised into Flower
        return Message(Error(protocol.BAD_REQUEST, f"cannot identify this node: {exc}"), reply_to=msg)
