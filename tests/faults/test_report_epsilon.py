"""Fault: a node's reply is lost after it spent privacy budget (issue 15: report.json showed 1.63 for a node whose
own account said 2.39). At the end of a run the coordinator asks every node for its own account of the study's
epsilon; the report shows that, never the last reply that happened to arrive."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from coordinator.report import RunReport
from coordinator.study_run import StudyRun
from federation import protocol
from federation.ids import StudyId
from node import client_app
from node.store import PrivacySpend, Store
from tests.coordinator.test_study_run import FakeGrid, FakeHospital, options, superlink_identity  # noqa: F401
from tests.node.test_client_app import context, message, offline_home  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(120)


class LosesItsLastReply(FakeHospital):
    """Trains every round, but the train reply of the last round never arrives; its own account then says 2.39."""

    def __init__(self, *args, last_round: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.last_round = last_round

    def __call__(self, msg: Message):
        kind = msg.metadata.message_type
        if kind == f"{MessageType.QUERY}.identify" and protocol.ROUND_CONFIG in msg.content:
            study = msg.content[protocol.ROUND_CONFIG]["study-id"]
            identity = protocol.identity_record(hospital=self.name, account=self.account, patients=40,
                                                epsilon_spent=2.39, study_id=study)
            return Message(RecordDict({protocol.USAGE: identity}), reply_to=msg)
        reply = super().__call__(msg)
        if kind == MessageType.TRAIN and msg.metadata.group_id == str(self.last_round):
            return None  # trained, spent budget, and the reply was lost
        return reply


def test_the_report_shows_each_nodes_own_epsilon_account_not_a_stale_reply(chain, tmp_path):
    alpha = LosesItsLastReply("alpha", chain.hospital, last_round=2)
    StudyRun(FakeGrid({1: alpha}), chain.coordinator, options(chain, num_rounds=2), tmp_path / "run").run()
    report = RunReport.load(tmp_path / "run" / "report.json")
    assert report.rounds[0].epsilon["alpha"] == 0.5  # what round 1's reply said
    assert report.hospitals[0].epsilon_spent == 2.39  # what the node's own account says at the end


def test_a_node_that_does_not_answer_at_the_end_keeps_its_last_reply_and_the_report_says_so(chain, tmp_path):
    alpha = FakeHospital("alpha", chain.hospital)  # answers identify without an account
    StudyRun(FakeGrid({1: alpha}), chain.coordinator, options(chain, num_rounds=1), tmp_path / "run").run()
    report = RunReport.load(tmp_path / "run" / "report.json")
    assert report.hospitals[0].epsilon_spent == 0.5
    assert "alpha" in report.message and "last reply" in report.message


def test_a_node_gives_its_own_epsilon_account_when_asked_about_a_study(offline_home):
    """The node side: `identify` with a study id answers the epsilon of the node's own privacy account (its last
    recorded spend), read from its database; no chain and no clinical data needed."""
    study = StudyId.new()
    store = Store(offline_home.resolved_database_url)
    store.record_spend([PrivacySpend(study_id=str(study), round=r, noise_multiplier=1.1, sample_rate=0.1, steps=10,
                                     delta=1e-5, epsilon_after=eps) for r, eps in ((1, 1.63), (2, 2.39))])
    content = RecordDict({protocol.ROUND_CONFIG: ConfigRecord({"study-id": str(study)})})
    reply = client_app.identify(message(f"{MessageType.QUERY}.identify", content), context(offline_home.home))
    identity = reply.content[protocol.USAGE]
    assert not reply.has_error() and identity["study-id"] == str(study) and identity["epsilon-spent"] == 2.39
    other = RecordDict({protocol.ROUND_CONFIG: ConfigRecord({"study-id": str(StudyId.new())})})
    reply = client_app.identify(message(f"{MessageType.QUERY}.identify", other), context(offline_home.home))
    assert reply.content[protocol.USAGE]["epsilon-spent"] == 0.0
