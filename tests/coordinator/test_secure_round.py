"""Secure aggregation (Flower's SecAgg+) of a round's updates: four real hospital nodes (their ClientApp, consent
gate, DP-SGD and privacy account) answer the coordinator's StudyRun in this process, over Flower's wire format,
on anvil. The coordinator's new model is the weighted average of what the nodes trained, within
the quantisation error, although no message it receives holds one hospital's weights; a node dying mid-protocol
does not end the round."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from flwr.app import Context, MessageType, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.supercore.task_identity import TaskIdentity

from benchmarks.grid import InProcessGrid
from coordinator import secure_round
from coordinator.report import RunReport
from coordinator.run_options import RunOptions
from coordinator.study_run import StudyRun
from federation import protocol
from federation.commitment import pseudonym_commitment
from federation.ids import Pseudonym
from federation.protocol import RoundConfig
from node import client_app
from node.consent_gate import Refusal
from node.service import HospitalNode, TrainOutcome

HEART_DATA = Path(__file__).resolve().parents[2] / "deploy" / "data" / "heart-disease" / "processed.cleveland.data"
HOSPITALS = ("alpha", "beta", "gamma", "delta")
PATIENTS = 30  # per hospital

SLOW = pytest.mark.slow  # about 12 s a test on anvil (the module's federation: about 10 s, once)


@pytest.fixture(scope="module")
def consortium(anvil_url, artifacts, tmp_path_factory):
    """Contracts, a coordinator and four nodes with their patients enrolled, on the session's anvil."""
    from contracts import ledger as lg
    from deploy.consortium import Consortium

    workdir = tmp_path_factory.mktemp("secure-round")
    consortium = Consortium.deploy(lg.connect(anvil_url), rpc_url=anvil_url, artifacts=artifacts,
                                   deployment_file=workdir / "deployment.json",
                                   operator_key_file=workdir / "operator.key")
    consortium.add_coordinator(key_file=workdir / "coordinator.key")
    lines = HEART_DATA.read_text().splitlines()
    for i, name in enumerate(HOSPITALS):
        csv = workdir / f"{name}.csv"
        csv.write_text("\n".join(lines[i * PATIENTS:(i + 1) * PATIENTS]) + "\n")
        consortium.add_node(name, workdir / name, records=[csv]).enrol()
    return consortium


class Federation:
    """The four nodes with their patients consenting to a new study; what each trained, as they trained it."""

    def __init__(self, consortium, monkeypatch):
        self.nodes = {str(node.settings.home): node for node in consortium.nodes.values()}
        self.study = consortium.open_study(epsilon_budget=3.0, delta_exponent=5, rounds=2)
        self.coordinator = consortium.coordinator
        self.trained: dict[str, tuple[int, dict]] = {}  # hospital -> (weight, weights), as each node trained
        train = HospitalNode.train

        def recording_train(node, config, state):
            outcome = train(node, config, state)
            self.trained[node.settings.hospital] = (outcome.num_examples, outcome.state)
            return outcome

        monkeypatch.setattr(HospitalNode, "train", recording_train)
        for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", SUPERLINK_NODE_ID)):
            monkeypatch.setattr(TaskIdentity, name, value)

    def run(self, grid, tmp_path: Path) -> tuple[StudyRun, dict]:
        options = RunOptions(study_id=self.study, num_rounds=1, wait_for_nodes_s=0, round_timeout_s=1,
                             strategy="fedavg", min_nodes=len(HOSPITALS), secure_aggregation=True)
        run = StudyRun(grid, self.coordinator, options, tmp_path / "run")
        torch.manual_seed(0)
        before = {k: v.clone() for k, v in run.task.build_model().state_dict().items()}
        after = run.run().to_torch_state_dict()
        return run, {"before": before, "after": after}

    def expected_average(self, hospitals) -> tuple[dict, float]:
        """FedAvg's average of what `hospitals` trained, and the bound of SecAgg+'s quantisation error on it."""
        weights = [self.trained[h][0] for h in hospitals]
        average = {k: sum(w * self.trained[h][1][k].double() for h, w in zip(hospitals, weights)) / sum(weights)
                   for k in self.trained[hospitals[0]][1]}
        return average, weights


def grid_of(federation: Federation, *, silent_from: dict[int, str] | None = None):
    """The in-process Grid of the benchmarks over the four nodes, keeping every reply the coordinator receives;
    `silent_from`: node id -> the SecAgg+ stage from which that node answers nothing more (it died)."""
    silent_from = silent_from or {}

    class Recording(InProcessGrid):
        received: list = []

        def push_messages(self, messages):
            delivered = []
            ids = []
            for message in messages:
                stage = _stage(message)
                cutoff = silent_from.get(message.metadata.dst_node_id)
                if cutoff is not None and stage is not None and \
                        Stage.all().index(stage) >= Stage.all().index(cutoff):
                    message.metadata.__dict__["_message_id"] = f"lost-{id(message)}"
                    ids.append(message.metadata.message_id)
                else:
                    delivered.append(message)
            return super().push_messages(delivered) + ids

        def pull_messages(self, message_ids):
            replies = super().pull_messages(message_ids)
            self.received.extend(replies)
            return replies

    homes = {i: node.settings.home for i, node in enumerate(federation.nodes.values(), start=1)}
    return Recording(homes)


def _stage(message):
    content = message.content
    if RECORD_KEY_CONFIGS not in content.config_records:
        return None
    return content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE)


def _assert_within(after: dict, expected: dict, bound: float):
    for key, value in expected.items():
        error = (after[key].double() - value).abs().max().item()
        assert error <= bound, (key, error, bound)


@SLOW
def test_the_coordinator_gets_the_weighted_average_and_never_one_hospitals_weights(consortium, tmp_path, monkeypatch):
    federation = Federation(consortium, monkeypatch)
    grid = grid_of(federation)
    run, model = federation.run(grid, tmp_path)

    (record,) = run.report.rounds
    assert set(record.used) == set(HOSPITALS) and record.errors == {} and record.anchor_block is not None
    assert sorted(r.reply["phase"] for r in record.replies) == ["evaluate"] * 4 + ["train"] * 4
    average, weights = federation.expected_average(list(HOSPITALS))
    bound = secure_round.quantisation_error_bound(4, weights, secure_round.max_weight(run, list(run.hospitals)))
    assert bound < 1e-4  # negligible against DP-SGD's noise (docs/privacy.md)
    _assert_within(model["after"], average, bound + 1e-6)  # + float32 rounding of the saved model
    assert any((model["after"][k] - model["before"][k]).abs().max() > 100 * bound for k in average)

    # Nothing the coordinator received holds a hospital's weights: no arrays at all, no bytes of them.
    plain = [array.numpy().tobytes() for _, state in federation.trained.values() for array in state.values()]
    train_replies = [m for m in grid.received if not m.has_error() and _stage_of_reply(m) is not None]
    assert len(train_replies) == 4 * 4  # four stages, four nodes
    for reply in grid.received:
        if reply.has_error():
            continue
        assert all(len(record) == 0 for record in reply.content.array_records.values())
        for config in reply.content.config_records.values():
            for value in config.values():
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, bytes):
                        assert not any(p in item for p in plain)


def _stage_of_reply(reply):
    configs = reply.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is None:
        return None
    for stage, key in ((Stage.SETUP, Key.PUBLIC_KEY_1), (Stage.SHARE_KEYS, Key.CIPHERTEXT_LIST),
                       (Stage.COLLECT_MASKED_VECTORS, Key.MASKED_PARAMETERS), (Stage.UNMASK, Key.SHARE_LIST)):
        if key in configs:
            return stage
    return None


@SLOW
def test_a_round_survives_a_node_dying_before_it_shares_its_keys_and_another_before_unmasking(
        consortium, tmp_path, monkeypatch):
    federation = Federation(consortium, monkeypatch)
    # delta dies after the setup, before it shares its keys (Flower's workflow alone then ended the round: it asked
    # the others for shares of delta's key they never got); gamma after sending its masked vector (its mask is
    # removed with the others' shares): 2 of 4 answer at the end, the threshold at four nodes.
    grid = grid_of(federation, silent_from={4: Stage.SHARE_KEYS, 3: Stage.UNMASK})
    run, model = federation.run(grid, tmp_path)

    (record,) = RunReport.load(tmp_path / "run" / "report.json").rounds
    assert set(record.used) == {"alpha", "beta", "gamma"} and record.anchor_block is not None
    assert record.errors["delta"].startswith("train: secure aggregation (share keys): no reply")
    assert "secure aggregation (unmask)" in record.errors["gamma"]
    assert secure_round.reconstruction_threshold(4) == 2
    average, weights = federation.expected_average(["alpha", "beta", "gamma"])
    bound = secure_round.quantisation_error_bound(3, weights, secure_round.max_weight(run, list(run.hospitals)))
    _assert_within(model["after"], average, bound + 1e-6)


@SLOW
def test_too_few_nodes_left_end_the_round_with_the_model_unchanged_and_say_why(consortium, tmp_path, monkeypatch):
    federation = Federation(consortium, monkeypatch)
    grid = grid_of(federation, silent_from={4: Stage.SHARE_KEYS, 3: Stage.SHARE_KEYS, 2: Stage.UNMASK})
    run, model = federation.run(grid, tmp_path)

    # gamma and delta go silent after setup, beta before unmasking: alpha's shares alone cannot unmask the sum.
    (record,) = run.report.rounds
    assert record.errors["coordinator"].startswith("train: secure aggregation ended before the sum was unmasked")
    assert all(torch.equal(model["after"][k], model["before"][k]) for k in model["before"])
    # alpha and beta trained: their use is anchored although the sum never was unmasked.
    assert set(record.used) == {"alpha", "beta"} and record.anchor_block is not None


# ---- the adapter alone: the real ClientApp and its SecAgg+ mod, node cores that only shift the weights ----


class ShiftingNode:
    """A node core for the real ClientApp: 'training' adds `shift` to every weight; it signs with `signer`."""

    def __init__(self, name: str, signer, *, weight: int, shift: float):
        self.settings = SimpleNamespace(hospital=name)
        self.ledger, self.account = signer, signer.address
        self.weight, self.shift = weight, shift
        self.store = SimpleNamespace(record_refusal=lambda refusal: None)

    def train(self, config, state):
        return TrainOutcome(state={k: v + self.shift for k, v in state.items()}, num_examples=self.weight,
                            epsilon_spent=0.5, epsilon_budget=3.0, mean_loss=0.0,
                            commitment=pseudonym_commitment([Pseudonym.new()]))

    def evaluate(self, config, state):
        raise Refusal(protocol.NO_CONSENTED_PATIENTS, "no test patients here")


def test_secure_aggregation_sums_signed_masked_vectors_and_leaves_out_a_reply_signed_by_a_stranger(
        chain, tmp_path, monkeypatch):
    from tests.coordinator.test_study_run import FakeGrid

    stranger = chain.ledger_for("0x" + "5" * 64)  # signs, but is no hospital of the consortium
    cores = {1: ShiftingNode("alpha", chain.hospital, weight=30, shift=0.25),
             2: ShiftingNode("beta", chain.other_hospital, weight=10, shift=-0.5),
             3: ShiftingNode("gamma", chain.consortium.add_hospital(), weight=20, shift=0.125),
             4: ShiftingNode("mallory", stranger, weight=1000, shift=8.0)}
    run = _secure_run(chain, tmp_path, monkeypatch, cores, FakeGrid)
    grid = run.grid
    torch.manual_seed(0)
    before = run.task.build_model().state_dict()
    after = run.run().to_torch_state_dict()

    (record,) = run.report.rounds
    assert set(record.used) == {"alpha", "beta", "gamma"} and "not an active hospital" in record.errors["mallory"]
    shift = (30 * 0.25 + 10 * -0.5 + 20 * 0.125) / 60  # FedAvg over the hospitals: mallory's vector is unmasked away
    bound = secure_round.quantisation_error_bound(3, [30, 10, 20], secure_round.max_weight(run, [1, 2, 3, 4]))
    for key in before:
        assert (after[key].double() - (before[key].double() + shift)).abs().max() <= bound + 1e-6
    assert {r.reply["phase"] for r in record.replies} == {"train"}
    masked = [m for m in grid.sent if m.metadata.message_type == MessageType.TRAIN]
    assert len(masked) == 4 * 4 - 1  # setup, share keys, masked vectors, unmask (mallory left out of the last)
    # Every stage names the round, as a plain train message does: a node's app gate keeps a refusal under it.
    assert all(RoundConfig.from_record(m.content[protocol.ROUND_CONFIG]).round == 1 for m in masked)


def test_a_sum_of_two_masked_vectors_is_never_unmasked_in_a_round_of_more_nodes(chain, tmp_path, monkeypatch):
    """Flower's masks come from 32-bit seeds: a sum of two would leave each vector one 2**32 search from the
    coordinator. With a third hospital dropped (its reply fails the signature check), the round ends unmasked."""
    from tests.coordinator.test_study_run import FakeGrid

    stranger = chain.ledger_for("0x" + "6" * 64)
    cores = {1: ShiftingNode("alpha", chain.hospital, weight=30, shift=0.25),
             2: ShiftingNode("beta", chain.other_hospital, weight=10, shift=-0.5),
             3: ShiftingNode("mallory", stranger, weight=10, shift=1.0)}
    run = _secure_run(chain, tmp_path, monkeypatch, cores, FakeGrid)
    torch.manual_seed(0)
    before = run.task.build_model().state_dict()
    after = run.run().to_torch_state_dict()
    (record,) = run.report.rounds
    assert "a sum needs 3 masked vectors" in record.errors["coordinator"]
    assert all(torch.equal(after[k], before[k]) for k in before)


def _secure_run(chain, tmp_path, monkeypatch, cores: dict, grid_class, *, strategy: str = "fedavg") -> StudyRun:
    """A one-round secure StudyRun whose nodes are the real ClientApp over `cores` (node id -> ShiftingNode)."""
    from tests.coordinator.test_study_run import FakeHospital

    contexts = {n: Context(run_id=1, node_id=n, node_config={"node-home": str(n)}, state=RecordDict(), run_config={})
                for n in cores}
    monkeypatch.setattr(client_app, "open_node", lambda context: cores[int(context.node_config["node-home"])])
    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", SUPERLINK_NODE_ID)):
        monkeypatch.setattr(TaskIdentity, name, value)

    def node(node_id):
        identify = FakeHospital(cores[node_id].settings.hospital, cores[node_id].ledger)

        def answer(msg):
            if msg.metadata.message_type == f"{MessageType.QUERY}.identify":
                return identify(msg)
            # Through Flower's wire format, as between processes (the workflow sends one record to every node).
            msg.metadata.__dict__["_run_id"] = 1
            delivered = message_from_proto(message_to_proto(msg))
            delivered.metadata.__dict__["_message_id"] = msg.metadata.message_id
            return client_app.app(message=delivered, context=contexts[node_id])
        return answer

    grid = grid_class({n: node(n) for n in cores})
    options = RunOptions(study_id=chain.study_id, num_rounds=1, wait_for_nodes_s=0, round_timeout_s=0.5,
                         strategy=strategy, secure_aggregation=True)
    return StudyRun(grid, chain.coordinator, options, tmp_path / "run")


def test_the_runs_server_optimiser_works_on_the_unmasked_average(chain, tmp_path, monkeypatch):
    """FedAdam (the Flower app's default strategy) over the securely summed average, as over the plain one."""
    from flwr.app import ArrayRecord, Message, MetricRecord

    from coordinator.run_options import make_strategy
    from tests.coordinator.test_study_run import FakeGrid

    cores = {1: ShiftingNode("alpha", chain.hospital, weight=30, shift=0.25),
             2: ShiftingNode("beta", chain.other_hospital, weight=10, shift=-0.5),
             3: ShiftingNode("gamma", chain.consortium.add_hospital(), weight=20, shift=0.125)}
    run = _secure_run(chain, tmp_path, monkeypatch, cores, FakeGrid, strategy="fedadam")
    torch.manual_seed(0)
    before = run.task.build_model().state_dict()
    after = run.run().to_torch_state_dict()

    plain = make_strategy(run.options)
    plain.current_arrays = {k: v.numpy() for k, v in before.items()}
    average = ArrayRecord({k: v + (30 * 0.25 + 10 * -0.5 + 20 * 0.125) / 60 for k, v in before.items()})
    reply = Message(RecordDict({protocol.WEIGHTS: average, protocol.METRICS: MetricRecord({"num-examples": 1})}),
                    dst_node_id=0, message_type=MessageType.TRAIN)
    expected, _ = plain.aggregate_train(1, [reply])
    assert run.report.rounds[0].errors == {"alpha": "evaluate: no consented patients: no test patients here",
                                           "beta": "evaluate: no consented patients: no test patients here",
                                           "gamma": "evaluate: no consented patients: no test patients here"}
    for key, value in expected.to_torch_state_dict().items():
        assert torch.allclose(after[key].double(), value.double(), atol=1e-4)
        assert not torch.allclose(after[key], before[key])
