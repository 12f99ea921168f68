"""The ClientApp's handlers fed Flower Message objects, as a SuperNode delivers them: work becomes a reply,
and every refusal an error reply with the protocol's code, kept in the node's store for hospital IT."""

from __future__ import annotations

from uuid import uuid4

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from contracts import ledger as lg
from federation import protocol
from federation.commitment import model_hash, pseudonym_commitment
from federation.ids import Digest, Pseudonym, StudyId
from federation.protocol import RoundConfig, RoundReply
from federation.tasks import get_task
from node import admin, client_app
from node.service import HospitalNode
from node.store import Store
from tests.node.hospital import hospital  # noqa: F401 - the fixture

NODE_ID = 7


@pytest.fixture(autouse=True)
def superlink_identity(monkeypatch):
    """What flwr's runtime sets in the coordinator's process before messages are created."""
    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", SUPERLINK_NODE_ID)):
        monkeypatch.setattr(TaskIdentity, name, value)


def message(message_type: str, content: RecordDict | None = None) -> Message:
    msg = Message(content or RecordDict(), dst_node_id=NODE_ID, message_type=message_type, group_id="1")
    msg.metadata.__dict__["_message_id"] = uuid4().hex  # what the SuperLink does
    return msg


def round_message(message_type: str, config: RoundConfig) -> Message:
    torch.manual_seed(0)
    weights = ArrayRecord(get_task("heart-disease/v1").build_model().state_dict())
    return message(message_type, RecordDict({protocol.WEIGHTS: weights, protocol.ROUND_CONFIG: config.to_record()}))


def context(home) -> Context:
    node_config = {"node-home": str(home)} if home else {}
    return Context(run_id=1, node_id=NODE_ID, node_config=node_config, state=RecordDict(), run_config={})


@pytest.fixture
def offline_home(tmp_path):
    """A node home with no chain configured: it can say who it is, and refuses every round."""
    return admin.init_node(tmp_path / "node", hospital="cleveland", rpc_url="unused", deployment_file=None)


def test_identify_names_the_hospital_and_its_account_without_the_chain(offline_home):
    reply = client_app.identify(message(f"{MessageType.QUERY}.identify"), context(offline_home.home))
    assert not reply.has_error() and reply.metadata.reply_to_message_id
    identity = reply.content[protocol.USAGE]
    assert identity["hospital"] == "cleveland" and identity["account"] == admin.hospital_address(offline_home)
    assert identity["patients"] == 0


def test_a_supernode_without_a_node_home_answers_with_a_bad_request():
    config = RoundConfig(study_id=StudyId.new(), round=1, block=1)
    reply = client_app.train(round_message(MessageType.TRAIN, config), context(None))
    assert reply.has_error() and reply.error.code == protocol.BAD_REQUEST
    assert "node-home" in reply.error.reason
    identify = client_app.identify(message(f"{MessageType.QUERY}.identify"), context(None))
    assert identify.error.code == protocol.BAD_REQUEST and "cannot identify this node" in identify.error.reason


def test_a_malformed_round_configuration_is_a_bad_request_that_uses_no_data(offline_home):
    msg = message(MessageType.TRAIN, RecordDict({protocol.ROUND_CONFIG: ConfigRecord({"study-id": "0x12"})}))
    reply = client_app.app(message=msg, context=context(offline_home.home))
    assert reply.has_error() and reply.error.code == protocol.BAD_REQUEST
    assert reply.error.reason.startswith("bad request, no data used")


def test_a_node_without_a_chain_refuses_and_keeps_the_refusal(offline_home):
    study = StudyId.new()
    reply = client_app.app(message=round_message(MessageType.EVALUATE, RoundConfig(study_id=study, round=2, block=5)),
                           context=context(offline_home.home))
    assert reply.has_error() and reply.error.code == protocol.CHAIN_UNAVAILABLE
    (kept,) = Store(offline_home.resolved_database_url).refusals(str(study))
    assert (kept.round, kept.phase, kept.code) == (2, "evaluate", protocol.CHAIN_UNAVAILABLE)
    assert kept.reason == reply.error.reason


@pytest.mark.slow
def test_train_and_evaluate_reply_with_what_the_node_used(hospital, monkeypatch):
    monkeypatch.setattr(client_app, "open_node", lambda ctx: HospitalNode(hospital.settings, ledger=hospital.chain.hospital))
    config = hospital.config(1)

    trained = client_app.app(message=round_message(MessageType.TRAIN, config), context=context(hospital.settings.home))
    assert not trained.has_error()
    (usage,) = hospital.store.usage()
    metrics, used = trained.content[protocol.METRICS], trained.content[protocol.USAGE]
    # The count sent is the noisy, charged aggregation weight (issue 13); the exact set is in the usage log.
    assert metrics["num-examples"] == used["used"] >= 1 and len(usage.pseudonym_list) > 0
    assert "train-loss" not in metrics  # not a charged release: not sent
    assert 0 < metrics["epsilon"] <= metrics["epsilon-budget"] and metrics["train-seconds"] > 0
    assert used["account"] == hospital.chain.hospital.address and used["phase"] == "train"
    assert Digest.parse(used["commitment"]) == pseudonym_commitment(Pseudonym.parse(p) for p in usage.pseudonym_list)
    assert set(trained.content[protocol.WEIGHTS].to_torch_state_dict()) == set(get_task("heart-disease/v1").build_model().state_dict())

    evaluated = client_app.app(message=round_message(MessageType.EVALUATE, config), context=context(hospital.settings.home))
    assert not evaluated.has_error()
    metrics = evaluated.content[protocol.METRICS]
    # Noisy sums, charged: the count sent is the noisy "examples" sum, the epsilon the study's after it.
    assert metrics["num-examples"] == max(0, round(metrics["examples"]))
    assert metrics["epsilon"] <= 3.0
    _, evaluated_usage = hospital.store.usage()
    assert set(evaluated_usage.pseudonym_list) == hospital.consented_in("test", hospital.consenting)
    assert evaluated.content[protocol.USAGE]["phase"] == "evaluate"


@pytest.mark.slow
def test_train_and_evaluate_replies_are_signed_by_the_hospital_over_what_they_carry(hospital, monkeypatch):
    monkeypatch.setattr(client_app, "open_node", lambda ctx: HospitalNode(hospital.settings, ledger=hospital.chain.hospital))
    config = hospital.config(1)
    sent = round_message(MessageType.TRAIN, config)
    received = model_hash(sent.content[protocol.WEIGHTS].to_torch_state_dict())
    for kind in (MessageType.TRAIN, MessageType.EVALUATE):
        reply = client_app.app(message=round_message(kind, config), context=context(hospital.settings.home))
        signed = RoundReply.from_record(reply.content[protocol.ROUND_REPLY])
        usage, metrics = reply.content[protocol.USAGE], reply.content[protocol.METRICS]
        signature = protocol.reply_signature(usage)
        assert lg.recover_round_reply(hospital.chain.deployment, signed, signature) == hospital.chain.hospital.address
        assert (signed.study_id, signed.round, signed.pinned_block) == (config.study_id, 1, config.block)
        assert signed.model_digest == received and signed.num_examples == metrics["num-examples"] == usage["used"]
        assert signed.commitment == Digest.parse(usage["commitment"])
        if kind == MessageType.TRAIN:
            assert signed.phase == "train"
            assert signed.reply_digest == model_hash(reply.content[protocol.WEIGHTS].to_torch_state_dict())
            assert signed.epsilon_milli == protocol.epsilon_milli(metrics["epsilon"]) > 0
        else:
            assert signed.phase == "evaluate"
            assert signed.epsilon_milli == protocol.epsilon_milli(metrics["epsilon"]) > 0  # evaluation is charged
            assert signed.reply_digest == protocol.metrics_digest(dict(metrics))


@pytest.mark.slow
def test_a_study_the_hospital_has_not_accepted_is_refused_with_its_code(hospital, monkeypatch):
    monkeypatch.setattr(client_app, "open_node", lambda ctx: HospitalNode(hospital.settings, ledger=hospital.chain.hospital))
    unknown = StudyId(b"\x07" * 32)
    reply = client_app.app(message=round_message(MessageType.TRAIN, hospital.config(1, study_id=unknown)),
                           context=context(hospital.settings.home))
    assert reply.has_error() and reply.error.code == protocol.STUDY_NOT_ACCEPTED
    (kept,) = hospital.store.refusals(str(unknown))
    assert kept.phase == "train" and kept.code == protocol.STUDY_NOT_ACCEPTED
    hospital.uses_nothing()
