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
from coordinator.study_run import RunOptions, StudyRun
from federation import protocol
from federation.commitment import combined_commitment, model_hash, pseudonym_commitment
from federation.defaults import TRAINING
from federation.ids import Pseudonym, StudyId

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
    """A node that identifies itself, 'trains' (nudges every weight) and 'evaluates' with fixed sums."""

    def __init__(self, name: str, account: str, *, refuse_with: int | None = None):
        self.name, self.account, self.refuse_with = name, account, refuse_with
        self.train_pseudonyms = [Pseudonym.new() for _ in range(TRAINED)]
        self.test_pseudonyms = [Pseudonym.new() for _ in range(TESTED)]

    def __call__(self, msg: Message) -> Message:
        kind = msg.metadata.message_type
        if kind == f"{MessageType.QUERY}.identify":
            identity = protocol.identity_record(hospital=self.name, account=self.account, patients=40)
            return Message(RecordDict({protocol.USAGE: identity}), reply_to=msg)
        if self.refuse_with is not None:
            return Message(Error(self.refuse_with, f"{self.name} says no"), reply_to=msg)
        if kind == MessageType.TRAIN:
            state = {k: v + 0.01 for k, v in msg.content[protocol.WEIGHTS].to_torch_state_dict().items()}
            return Message(RecordDict({
                protocol.WEIGHTS: ArrayRecord(state),
                protocol.METRICS: MetricRecord({"num-examples": TRAINED, "epsilon": 0.5, "epsilon-budget": 3.0,
                                                "train-loss": 0.7, "train-seconds": 0.25}),
                protocol.USAGE: protocol.usage_record(hospital=self.name, account=self.account, used=TRAINED,
                                                      commitment=pseudonym_commitment(self.train_pseudonyms),
                                                      phase="train"),
            }), reply_to=msg)
        return Message(RecordDict({
            protocol.METRICS: MetricRecord({"num-examples": TESTED, "consented": TESTED, "examples": TESTED,
                                            "correct": 3, "loss-sum": 2.0, "positives": 1}),
            protocol.USAGE: protocol.usage_record(hospital=self.name, account=self.account, used=TESTED,
                                                  commitment=pseudonym_commitment(self.test_pseudonyms),
                                                  phase="evaluate"),
        }), reply_to=msg)


@pytest.fixture(autouse=True)
def superlink_identity(monkeypatch):
    """What flwr's ServerApp runtime sets in its process before the ServerApp creates messages."""
    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", SUPERLINK_NODE_ID)):
        monkeypatch.setattr(TaskIdentity, name, value)


def options(chain, **changes) -> RunOptions:
    return RunOptions(study_id=chain.study_id, **{"num_rounds": 2, "wait_for_nodes_s": 0, "round_timeout_s": 0.5,
                                                  "strategy": "fedavg", **changes})


def test_a_round_trains_aggregates_evaluates_and_anchors_what_the_nodes_used(chain, tmp_path):
    alpha = FakeHospital("alpha", chain.hospital.address)
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
    StudyRun(FakeGrid({1: FakeHospital("alpha", chain.hospital.address)}), chain.coordinator,
             options(chain, num_rounds=1), tmp_path / "run").run()
    import json

    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(saved) == {"status", "message", "started_at", "study", "hospitals", "rounds"}
    assert set(saved["study"]) == {"id", "purpose", "task", "epsilon_budget", "delta", "rounds", "metric"}
    assert set(saved["hospitals"][0]) == {"name", "account", "patients", "consented", "epsilon_spent", "epsilon_budget"}
    assert set(saved["rounds"][0]) == {
        "round", "block", "accuracy", "loss", "constant_accuracy", "metrics", "used", "test_used", "epsilon",
        "train_seconds", "errors", "status", "seconds", "training_seconds", "model_hash", "anchor_block"}


def test_a_refusing_node_and_a_silent_node_are_reported_by_name_and_the_round_goes_on(chain, tmp_path):
    nodes = {
        1: FakeHospital("alpha", chain.hospital.address),
        2: FakeHospital("beta", chain.other_hospital.address, refuse_with=protocol.BUDGET_SPENT),
        3: lambda msg: None,  # never answers
    }
    run = StudyRun(FakeGrid(nodes), chain.coordinator, options(chain, num_rounds=1), tmp_path / "run")
    run.run()
    (record,) = RunReport.load(tmp_path / "run" / "report.json").rounds
    assert record.used == {"alpha": TRAINED} and record.anchor_block is not None
    assert record.errors["beta"] == "train: privacy budget spent: beta says no; evaluate: privacy budget spent: beta says no"
    assert record.errors["node 3"].startswith("train: no reply within 0.5 s")


def test_a_round_where_no_node_used_data_keeps_the_model_and_is_not_anchored(chain, tmp_path):
    grid = FakeGrid({1: FakeHospital("alpha", chain.hospital.address, refuse_with=protocol.CONSENT_UNCLEAR)})
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
    grid = FakeGrid({1: FakeHospital("alpha", chain.hospital.address)})
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

    grid = FakeGrid({1: FakeHospital("alpha", chain.hospital.address)})
    server_app.main(grid, context("first"))
    first = RunReport.load(settings.runs_dir / "first" / "report.json")
    assert first.status == "finished" and first.rounds[0].anchor_block is not None

    with pytest.raises(RuntimeError, match="already anchored"):
        server_app.main(grid, context("again"))
    again = RunReport.load(settings.runs_dir / "again" / "report.json")
    assert again.status == "failed" and "already anchored" in again.message
