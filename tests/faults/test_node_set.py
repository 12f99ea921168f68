"""Faults of issue 15 in the coordinator's node set, on a fake Grid (the real processes: test_federation_faults.py):
a round with round-timeout-s 30 took 223 s, dead nodes still counted toward min-nodes, a restarted SuperNode
never rejoined, and errors named "node 1" (the SuperLink's own node id) instead of the hospital."""

from __future__ import annotations

import time

import pytest
from flwr.app import Error, Message, MessageType
from flwr.common.constant import SUPERLINK_NODE_ID

from coordinator.node_set import NotEnoughNodes
from coordinator.report import RunReport
from coordinator.study_run import StudyRun
from tests.coordinator.test_study_run import FakeGrid, FakeHospital, options, superlink_identity  # noqa: F401

pytestmark = pytest.mark.timeout(120)


class Hangs(FakeHospital):
    """Answers until round `from_round`, then never again (a SIGSTOPped SuperNode)."""

    def __init__(self, *args, from_round: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.from_round, self.hung = from_round, False

    def __call__(self, msg: Message):
        group = msg.metadata.group_id
        self.hung = self.hung or (group.isdigit() and int(group) >= self.from_round)
        return None if self.hung else super().__call__(msg)


def test_a_hung_node_is_sent_nothing_more_that_round_and_the_round_ends_within_its_timeout(chain, tmp_path):
    grid = FakeGrid({1: FakeHospital("alpha", chain.hospital), 2: Hangs("beta", chain.other_hospital, from_round=1)})
    run = StudyRun(grid, chain.coordinator, options(chain, num_rounds=1, round_timeout_s=1.0), tmp_path / "run")
    started = time.monotonic()
    run.run()
    (record,) = RunReport.load(tmp_path / "run" / "report.json").rounds
    assert record.used == {"alpha": 10} and record.anchor_block is not None
    assert record.errors["beta"].startswith("train: no reply within 1 s")
    to_beta = [m.metadata.message_type for m in grid.sent if m.metadata.dst_node_id == 2]
    assert MessageType.EVALUATE not in to_beta  # dropped from the rest of the round
    # training waited 3/4 of the timeout, evaluation what was left: the round is within its 1 s (plus the anchor)
    assert record.training_seconds < 1.0 and record.seconds < 1.0 + 1.5
    assert time.monotonic() - started < 30


def test_a_restarted_supernode_rejoins_at_the_next_round_as_the_same_hospital(chain, tmp_path):
    beta = FakeHospital("beta", chain.other_hospital)

    class RestartingGrid(FakeGrid):
        """Once round 1 was evaluated, beta's SuperNode is back under a new Flower node id."""

        def get_node_ids(self):
            if 2 in self.nodes and any(m.metadata.message_type == MessageType.EVALUATE for m in self.sent):
                del self.nodes[2]
                self.nodes[7] = beta
            return super().get_node_ids()

    grid = RestartingGrid({1: FakeHospital("alpha", chain.hospital), 2: beta})
    run = StudyRun(grid, chain.coordinator, options(chain, num_rounds=2, min_nodes=2), tmp_path / "run")
    run.run()
    report = RunReport.load(tmp_path / "run" / "report.json")
    assert report.status == "finished"
    assert [h.name for h in report.hospitals] == ["alpha", "beta"]  # one beta, not a second one
    assert [sorted(r.used) for r in report.rounds] == [["alpha", "beta"], ["alpha", "beta"]]
    assert not report.rounds[1].errors
    assert 7 in {m.metadata.dst_node_id for m in grid.sent if m.metadata.message_type == MessageType.TRAIN}


def test_a_run_left_with_fewer_than_round_min_nodes_ends_naming_the_hospitals_missing(chain, tmp_path):
    grid = FakeGrid({1: FakeHospital("alpha", chain.hospital), 2: Hangs("beta", chain.other_hospital, from_round=2)})
    run = StudyRun(grid, chain.coordinator, options(chain, num_rounds=3, round_min_nodes=2, round_timeout_s=1.0),
                   tmp_path / "run")
    with pytest.raises(NotEnoughNodes) as ended:
        run.run()
    message = str(ended.value)
    assert message.startswith("round 3 cannot start: 1 hospital(s) can take part (alpha), round-min-nodes is 2")
    assert "missing: beta (no reply to train in round 2, and none to identify since)" in message
    assert [r.anchor_block is not None for r in run.report.rounds] == [True, True]  # what was done stays anchored


def test_a_hospital_left_out_of_a_round_is_named_in_that_rounds_errors(chain, tmp_path):
    grid = FakeGrid({1: FakeHospital("alpha", chain.hospital), 2: Hangs("beta", chain.other_hospital, from_round=1)})
    run = StudyRun(grid, chain.coordinator, options(chain, num_rounds=2, round_timeout_s=1.0), tmp_path / "run")
    run.run()
    first, second = RunReport.load(tmp_path / "run" / "report.json").rounds
    assert first.errors["beta"].startswith("train: no reply within 1 s")
    assert second.errors["beta"] == "not in this round: no reply to train in round 1, and none to identify since"
    assert second.used == {"alpha": 10}


def test_the_superlinks_node_unavailable_answer_names_the_hospital_not_node_1(chain, tmp_path):
    class Lost(FakeHospital):
        """The SuperLink answers for a node whose heartbeat stopped, under its own node id."""

        def __call__(self, msg):
            if msg.metadata.message_type != MessageType.TRAIN:
                return super().__call__(msg)
            reply = Message(Error(5, "Node Unavailable"), reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
            return reply

    grid = FakeGrid({3: FakeHospital("alpha", chain.hospital), 4: Lost("beta", chain.other_hospital)})
    StudyRun(grid, chain.coordinator, options(chain, num_rounds=1), tmp_path / "run").run()
    (record,) = RunReport.load(tmp_path / "run" / "report.json").rounds
    assert "node 1" not in record.errors and record.errors["beta"].startswith("train: node unavailable")
    # a node the SuperLink lost is sent nothing more that round
    assert MessageType.EVALUATE not in [m.metadata.message_type for m in grid.sent if m.metadata.dst_node_id == 4]
