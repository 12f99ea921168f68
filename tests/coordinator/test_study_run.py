"""StudyRun, the coordinator's side of a study's rounds, against a fake Grid whose nodes answer in this
process, and the test chain: every phase's outcome lands in the typed report and the round on chain."""

from __future__ import annotations

from uuid import uuid4

import pytest
import torch
from flwr.app import ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from coordinator.report import RunReport
from coordinator.server_app import run_options
from coordinator.settings import CoordinatorSettings
from coordinator.run_options import RunOptions
from coordinator.study_run import StudyRun
from federation import protocol
from federation.commitment import combined_commitment, model_hash, pseudonym_commitment
from federation.defaults import TRAINING
from federation.ids import Digest, Pseudonym, StudyId
from federation.protocol import RoundConfig, RoundReply

TRAINED, TESTED = 10, 4  # patients each answering node says it used


class FakeGrid(Grid):
    """A stand-in for the SuperLink: hands each message to a node function in this process at once.
    A node function returns the reply, or None for a node that never answers."""

    def __init__(self, nodes: dict):
        self.nodes = nodes
        self.replies: dict[str, Message] = {}
        self.sent: list[Message] = []

    def set_run(self, run_id) -> None:
        pass

    @property
    def run(self):
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self):
        return list(self.nodes)

    def push_messages(self, messages) -> list[str]:
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid4().hex  # what the SuperLink does
            self.sent.append(message)
            reply = self.nodes[message.metadata.dst_node_id](message)
            if reply is not None:
                self.replies[message.metadata.message_id] = reply
        return [m.metadata.message_id for m in messages]

    def pull_messages(self, message_ids) -> list[Message]:
        return [self.replies.pop(i) for i in message_ids if i in self.replies]

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))


class FakeHospital:
    """A node that identifies itself, 'trains' (nudges every weight) and 'evaluates' with fixed sums, and signs
    each reply with `signer`'s key (a Ledger: the hospital's, or an attacker's).

    `claims` is the account it names (default: the signer's); `tamper` changes a reply after it was signed."""

    def __init__(self, name: str, signer, *, refuse_with: int | None = None, claims: str | None = None,
                 tamper=None):
        self.name, self.signer, self.refuse_with, self.tamper = name, signer, refuse_with, tamper
        self.account = claims or signer.address
        self.train_pseudonyms = [Pseudonym.new() for _ in range(TRAINED)]
        self.test_pseudonyms = [Pseudonym.new() for _ in range(TESTED)]

    def _signed(self, msg: Message, phase: str, reply_digest, used: int, commitment, epsilon: float) -> RecordDict:
        config = RoundConfig.from_record(msg.content[protocol.ROUND_CONFIG])
        reply = RoundReply(study_id=config.study_id, round=config.round, pinned_block=config.block, phase=phase,
                           model_digest=model_hash(msg.content[protocol.WEIGHTS].to_torch_state_dict()),
                           reply_digest=reply_digest, num_examples=used, commitment=commitment,
                           epsilon_milli=protocol.epsilon_milli(epsilon) if phase == "train" else 0)
        return RecordDict({
            protocol.ROUND_REPLY: reply.to_record(),
            protocol.USAGE: protocol.usage_record(hospital=self.name, account=self.account, used=used,
                                                  commitment=commitment, phase=phase,
                                                  signature=self.signer.sign_round_reply(reply)),
        })

    def __call__(self, msg: Message) -> Message:
        kind = msg.metadata.message_type
        if kind == f"{MessageType.QUERY}.identify":
            identity = protocol.identity_record(hospital=self.name, account=self.account, patients=40)
            return Message(RecordDict({protocol.USAGE: identity}), reply_to=msg)
        if self.refuse_with is not None:
            return Message(Error(self.refuse_with, f"{self.name} says no"), reply_to=msg)
        if kind == MessageType.TRAIN:
            weights = ArrayRecord({k: v + 0.01 for k, v in msg.content[protocol.WEIGHTS].to_torch_state_dict().items()})
            metrics = MetricRecord({"num-examples": TRAINED, "epsilon": 0.5, "epsilon-budget": 3.0,
                                    "train-loss": 0.7, "train-seconds": 0.25})
            content = self._signed(msg, "train", model_hash(weights.to_torch_state_dict()), TRAINED,
                                   pseudonym_commitment(self.train_pseudonyms), 0.5)
            content[protocol.WEIGHTS], content[protocol.METRICS] = weights, metrics
        else:
            metrics = MetricRecord({"num-examples": TESTED, "consented": TESTED, "examples": TESTED,
                                    "correct": 3, "loss-sum": 2.0, "positives": 1})
            content = self._signed(msg, "evaluate", protocol.metrics_digest(dict(metrics)), TESTED,
                                   pseudonym_commitment(self.test_pseudonyms), 0.0)
            content[protocol.METRICS] = metrics
        if self.tamper:
            self.tamper(kind, content)
        return Message(content, reply_to=msg)


@pytest.fixture(autouse=True)
def superlink_identity(monkeypatch):
    """What flwr's ServerApp runtime sets in its process before the ServerApp creates messages."""
    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", SUPERLINK_NODE_ID)):
        monkeypatch.setattr(TaskIdentity, name, value)


def options(chain, **changes) -> RunOptions:
    return RunOptions(study_id=chain.study_id, **{"num_rounds": 2, "wait_for_nodes_s": 0, "round_timeout_s": 0.5,
                                                  "strategy": "fedavg", **changes})


def test_a_round_trains_aggregates_evaluates_and_anchors_what_the_nodes_used(chain, tmp_path):
    alpha = FakeHospital("alpha", chain.hospital)
    run = StudyRun(FakeGrid({1: alpha}), chain.coordinator, options(chain), tmp_path / "run")
    arrays = run.run()

    report = RunReport.load(tmp_path / "run" / "report.json")
    assert report.status == "finished" and (tmp_path / "run" / "model.pt").exists()
    assert report.study.id == str(StudyId(chain.study_id)) and report.study.task == "heart-disease/v1"
    assert [h.name for h in report.hospitals] == ["alpha"] and report.hospitals[0].epsilon_spent == 0.5
    last = report.rounds[-1]
    assert [r.round for r in report.rounds] == [1, 2] and all(r.status == "done" for r in report.rounds)
    assert last.used == {"alpha": TRAINED} and last.test_used == {"alpha": TESTED}
    assert last.metrics["accuracy"] == pytest.approx(3 / TESTED) and last.value("accuracy") == last.metrics["accuracy"]
    assert last.train_seconds == {"alpha": 0.25} and last.errors == {}
    assert last.model_hash == str(model_hash(arrays.to_torch_state_dict()))

    (anchor, _) = chain.coordinator.round_anchors(chain.study_id)[-2:]
    assert anchor.round == 1 and anchor.pinned_block == report.rounds[0].block
    assert anchor.commitments == {chain.hospital.address: combined_commitment(
        pseudonym_commitment(alpha.train_pseudonyms), pseudonym_commitment(alpha.test_pseudonyms))}
    assert report.rounds[0].anchor_block == anchor.anchored_block


def test_report_json_keeps_the_shape_its_readers_know(chain, tmp_path):
    StudyRun(FakeGrid({1: FakeHospital("alpha", chain.hospital)}), chain.coordinator,
             options(chain, num_rounds=1), tmp_path / "run").run()
    import json

    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(saved) == {"status", "message", "started_at", "study", "hospitals", "rounds"}
    assert set(saved["study"]) == {"id", "purpose", "task", "epsilon_budget", "delta", "rounds", "metric", "weighted_by"}
    assert set(saved["hospitals"][0]) == {"name", "account", "patients", "consented", "epsilon_spent", "epsilon_budget",
                                          "privacy_account"}
    assert set(saved["rounds"][0]) == {
        "round", "block", "accuracy", "loss", "constant_accuracy", "metrics", "hospital_metrics", "subgroup_metrics", "used", "test_used", "epsilon",
        "train_seconds", "errors", "replies", "status", "seconds", "training_seconds", "model_hash", "anchor_block"}
    assert {r["reply"]["phase"] for r in saved["rounds"][0]["replies"]} == {"train", "evaluate"}


def test_a_refusing_node_and_a_silent_node_are_reported_by_name_and_the_round_goes_on(chain, tmp_path):
    nodes = {
        1: FakeHospital("alpha", chain.hospital),
        2: FakeHospital("beta", chain.other_hospital, refuse_with=protocol.BUDGET_SPENT),
        3: lambda msg: None,  # never answers
    }
    run = StudyRun(FakeGrid(nodes), chain.coordinator, options(chain, num_rounds=1), tmp_path / "run")
    run.run()
    (record,) = RunReport.load(tmp_path / "run" / "report.json").rounds
    assert record.used == {"alpha": TRAINED} and record.anchor_block is not None
    assert record.errors["beta"] == "train: privacy budget spent: beta says no; evaluate: privacy budget spent: beta says no"
    assert record.errors["node 3"].startswith("train: no reply within 0.5 s")


def test_a_round_where_no_node_used_data_keeps_the_model_and_is_not_anchored(chain, tmp_path):
    grid = FakeGrid({1: FakeHospital("alpha", chain.hospital, refuse_with=protocol.CONSENT_UNCLEAR)})
    run = StudyRun(grid, chain.coordinator, options(chain, num_rounds=1), tmp_path / "run")
    torch.manual_seed(0)
    before = model_hash(run.task.build_model().state_dict())
    run.run()
    (record,) = run.report.rounds
    assert record.model_hash == str(before) and record.anchor_block is None
    assert record.errors["coordinator"] == "round not anchored: no node used any data"
    assert chain.coordinator.anchor_of(chain.study_id, 1) is None


def test_rounds_already_anchored_are_refused_before_any_node_trains(chain, tmp_path):
    block = chain.coordinator.block_number()
    chain.coordinator.anchor_round(chain.study_id, 1, pinned_block=block, model_hash=b"\x01" * 32,
                                   commitments={chain.hospital.address: b"\x02" * 32})
    grid = FakeGrid({1: FakeHospital("alpha", chain.hospital)})
    with pytest.raises(RuntimeError, match=r"rounds \[1\] of this study are already anchored"):
        StudyRun(grid, chain.coordinator, options(chain), tmp_path / "run").run()
    assert {m.metadata.message_type for m in grid.sent} == {f"{MessageType.QUERY}.identify"}


def test_server_app_options_default_to_the_training_defaults(tmp_path):
    settings = CoordinatorSettings(home=tmp_path, min_nodes=2)
    study = StudyId.new()
    options = run_options({"study-id": str(study), "coordinator-home": str(tmp_path)}, settings)
    assert options.study_id == study and options.min_nodes == 2
    assert (options.num_rounds, options.local_epochs, options.learning_rate, options.batch_size,
            options.max_grad_norm, options.strategy, options.server_learning_rate) == (
        TRAINING.num_rounds, TRAINING.local_epochs, TRAINING.learning_rate, TRAINING.batch_size,
        TRAINING.max_grad_norm, TRAINING.strategy, TRAINING.server_learning_rate)
    assert run_options({"study-id": str(study), "num-rounds": 3, "strategy": "fedyogi"}, settings).num_rounds == 3
    with pytest.raises(ValueError, match="study id"):
        run_options({"study-id": "0x1234"}, settings)


def test_the_server_app_runs_a_study_from_its_run_config_and_reports_a_failed_run(chain, tmp_path):
    """The ServerApp's main as Flower calls it: settings from the coordinator's home, the chain over JSON-RPC."""
    from flwr.app import Context
    from web3.providers.eth_tester import EthereumTesterProvider

    from coordinator import server_app

    if isinstance(chain.w3.provider, EthereumTesterProvider):
        pytest.skip("the ServerApp opens the chain over JSON-RPC: anvil only")
    home = tmp_path / "coordinator"
    settings = CoordinatorSettings(home=home, rpc_url=chain.w3.provider.endpoint_uri,
                                   deployment_file=home / "deployment.json", round_timeout_s=0.5, wait_for_nodes_s=0)
    settings.save()
    chain.deployment.save(settings.deployment_file)
    chain.consortium.add_coordinator(key_file=settings.key_file)  # the coordinator's own key, in its home

    def context(run_name: str) -> Context:
        run_config = {"study-id": str(StudyId(chain.study_id)), "coordinator-home": str(home), "num-rounds": 1,
                      "strategy": "fedavg", "run-name": run_name}
        return Context(run_id=9, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)

    grid = FakeGrid({1: FakeHospital("alpha", chain.hospital)})
    server_app.main(grid, context("first"))
    first = RunReport.load(settings.runs_dir / "first" / "report.json")
    assert first.status == "finished" and first.rounds[0].anchor_block is not None

    with pytest.raises(RuntimeError, match="already anchored"):
        server_app.main(grid, context("again"))
    again = RunReport.load(settings.runs_dir / "again" / "report.json")
    assert again.status == "failed" and "already anchored" in again.message


# ---- identity from authentication, never from a claim (issue 11): each attack, and that it fails ----


def _stranger(chain):
    """An account no consortium registered (it signs; it needs no ether)."""
    return chain.ledger_for("0x" + __import__("secrets").token_hex(32))


def _honest_commitment(hospital: FakeHospital):
    return combined_commitment(pseudonym_commitment(hospital.train_pseudonyms),
                               pseudonym_commitment(hospital.test_pseudonyms))


@pytest.mark.parametrize("rogue_signer", ["unregistered key", "another registered hospital"])
def test_a_node_claiming_another_hospitals_account_gets_no_commitment_anchored_and_cannot_change_the_honest_ones(
        chain, tmp_path, rogue_signer):
    honest = FakeHospital("alpha", chain.hospital)
    signer = _stranger(chain) if rogue_signer == "unregistered key" else chain.other_hospital
    rogue = FakeHospital("rogue", signer, claims=chain.hospital.address)  # answers after the honest node
    run = StudyRun(FakeGrid({1: honest, 2: rogue}), chain.coordinator, options(chain, num_rounds=1), tmp_path / "run")
    run.run()

    (anchor,) = chain.coordinator.round_anchors(chain.study_id)
    assert anchor.commitments[chain.hospital.address] == _honest_commitment(honest)
    (record,) = run.report.rounds
    alpha = next(h for h in run.report.hospitals if h.name == "alpha")
    assert alpha.account == chain.hospital.address
    if rogue_signer == "unregistered key":
        assert set(anchor.commitments) == {chain.hospital.address}
        assert "not an active hospital" in record.errors["rogue"] and record.used == {"alpha": TRAINED}
    else:  # a registered hospital's own signed work counts for that hospital only, whatever it claims
        assert anchor.commitments[chain.other_hospital.address] == _honest_commitment(rogue)
        assert next(h for h in run.report.hospitals if h.name == "rogue").account == chain.other_hospital.address
    assert {r.hospital for r in record.replies} <= {chain.hospital.address, chain.other_hospital.address}


def test_an_inflated_num_examples_is_caught_by_the_signature_dropped_and_reported(chain, tmp_path):
    def inflate(kind, content):
        if kind == MessageType.TRAIN:
            content[protocol.METRICS]["num-examples"] = 10_000  # its weights would dominate the average

    honest = FakeHospital("alpha", chain.hospital)
    greedy = FakeHospital("beta", chain.other_hospital, tamper=inflate)
    run = StudyRun(FakeGrid({1: honest, 2: greedy}), chain.coordinator, options(chain, num_rounds=1),
                   tmp_path / "run")
    arrays = run.run()

    (record,) = run.report.rounds
    assert record.errors["beta"] == f"train: reply dropped: it reports 10000 examples, its hospital signed {TRAINED}"
    assert record.used == {"alpha": TRAINED}  # beta's weights are not in the average
    torch.manual_seed(0)
    expected = {k: v + 0.01 for k, v in run.task.build_model().state_dict().items()}
    assert all(torch.allclose(arrays.to_torch_state_dict()[k], v) for k, v in expected.items())
    (anchor,) = chain.coordinator.round_anchors(chain.study_id)
    assert anchor.commitments[chain.other_hospital.address] == combined_commitment(
        b"", pseudonym_commitment(greedy.test_pseudonyms))  # only its verified evaluation


def test_a_reply_signed_by_an_unregistered_key_is_dropped(chain, tmp_path):
    run = StudyRun(FakeGrid({1: FakeHospital("mallory", _stranger(chain))}), chain.coordinator,
                   options(chain, num_rounds=1), tmp_path / "run")
    run.run()
    (record,) = run.report.rounds
    assert record.errors["mallory"].startswith("train: reply dropped: signed by 0x")
    assert "not an active hospital" in record.errors["mallory"] and record.replies == []
    assert record.errors["coordinator"] == "round not anchored: no node used any data"
    assert chain.coordinator.anchor_of(chain.study_id, 1) is None


@pytest.mark.parametrize("tamper, reason", [
    (lambda kind, c: c[protocol.USAGE].__setitem__("commitment", str(Digest(b"\x01" * 32))),
     "commitment is not the one signed"),
    (lambda kind, c: kind == MessageType.TRAIN and c.__setitem__(protocol.WEIGHTS, ArrayRecord(
        {k: v * 0 for k, v in c[protocol.WEIGHTS].to_torch_state_dict().items()})), "weights are not the ones signed"),
    (lambda kind, c: c[protocol.USAGE].__setitem__(protocol.REPLY_SIGNATURE, "0x12"), "not a signed reply"),
    (lambda kind, c: c.pop(protocol.ROUND_REPLY), "not a signed reply"),
])
def test_a_reply_changed_after_its_hospital_signed_it_is_dropped(chain, tmp_path, tamper, reason):
    run = StudyRun(FakeGrid({1: FakeHospital("alpha", chain.hospital, tamper=tamper)}), chain.coordinator,
                   options(chain, num_rounds=1), tmp_path / "run")
    run.run()
    (record,) = run.report.rounds
    assert reason in record.errors["alpha"]


def test_a_second_reply_signed_by_the_same_hospital_is_dropped(chain, tmp_path):
    """A hospital running two nodes would count its data twice in the average."""
    nodes = {1: FakeHospital("alpha", chain.hospital), 2: FakeHospital("alpha-2", chain.hospital)}
    run = StudyRun(FakeGrid(nodes), chain.coordinator, options(chain, num_rounds=1), tmp_path / "run")
    run.run()
    (record,) = run.report.rounds
    assert record.used == {"alpha": TRAINED}
    assert "a second reply signed by hospital" in record.errors["alpha-2"]


def test_a_suspended_hospitals_signed_replies_do_not_count(chain, tmp_path):
    chain.operator.set_hospital_suspended(chain.other_hospital.address, True)
    nodes = {1: FakeHospital("alpha", chain.hospital), 2: FakeHospital("beta", chain.other_hospital)}
    run = StudyRun(FakeGrid(nodes), chain.coordinator, options(chain, num_rounds=1), tmp_path / "run")
    run.run()
    (anchor,) = chain.coordinator.round_anchors(chain.study_id)
    assert set(anchor.commitments) == {chain.hospital.address}


class KeyedGrid(FakeGrid):
    """A FakeGrid that names each node's authentication key, as the deployment engine's grid.get_nodes() does."""

    def __init__(self, nodes: dict, keys: dict):
        super().__init__(nodes)
        self.keys = keys

    def get_nodes(self):
        from flwr.proto.node_pb2 import NodeInfo

        return [NodeInfo(node_id=n, public_key=self.keys.get(n, b"")) for n in self.nodes]


def _node_key_pem():
    from cryptography.hazmat.primitives.asymmetric import ec

    from node import node_keys

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return node_keys.chain_node_key(key), node_keys.public_key_pem(key)


def test_a_node_whose_key_is_no_hospitals_is_sent_nothing_once_nodes_are_bound_to_hospitals(chain, tmp_path):
    point, pem = _node_key_pem()
    chain.hospital.set_node_key(point)
    _, stranger_pem = _node_key_pem()
    grid = KeyedGrid({1: FakeHospital("alpha", chain.hospital), 2: FakeHospital("beta", chain.other_hospital)},
                     {1: pem, 2: stranger_pem})
    run = StudyRun(grid, chain.coordinator, options(chain, num_rounds=1), tmp_path / "run")
    run.run()
    assert {m.metadata.dst_node_id for m in grid.sent} == {1}
    (record,) = run.report.rounds
    assert record.errors["node 2"].startswith("not admitted: the key it authenticated with is no hospital's node key")
    assert run.report.hospitals[0].account == chain.hospital.address
    (anchor,) = chain.coordinator.round_anchors(chain.study_id)
    assert set(anchor.commitments) == {chain.hospital.address}


def test_a_node_bound_to_one_hospital_cannot_answer_with_another_hospitals_signature(chain, tmp_path):
    """Hospital beta runs the node bound to alpha's key (say it stole the key): its replies, signed with beta's
    chain key, do not count, for alpha nor for beta."""
    point, pem = _node_key_pem()
    chain.hospital.set_node_key(point)
    grid = KeyedGrid({1: FakeHospital("alpha?", chain.other_hospital, claims=chain.hospital.address)}, {1: pem})
    run = StudyRun(grid, chain.coordinator, options(chain, num_rounds=1), tmp_path / "run")
    run.run()
    (record,) = run.report.rounds
    assert f"but the node authenticated as hospital {chain.hospital.address}'s node" in record.errors["alpha?"]
    assert chain.coordinator.anchor_of(chain.study_id, 1) is None


def test_a_node_whose_app_gate_refused_the_run_is_reported_by_the_codes_name(chain, tmp_path):
    from node import app_gate

    assert app_gate.APP_NOT_APPROVED == protocol.APP_NOT_APPROVED  # one code, named in the protocol
    grid = FakeGrid({1: FakeHospital("alpha", chain.hospital, refuse_with=protocol.APP_NOT_APPROVED)})
    run = StudyRun(grid, chain.coordinator, options(chain, num_rounds=1), tmp_path / "run")
    run.run()
    assert run.report.rounds[0].errors["alpha"].startswith("train: app not approved: alpha says no")
