"""A hospital node's privacy budget: never exceeded, kept across restarts, recomputed from the steps taken."""

from __future__ import annotations

import pytest

from federation import protocol
from node.consent_gate import Refusal
from node.privacy import PrivacyBudget, epsilon_of
from node.service import HospitalNode
from node.settings import NodeSettings
from tests.node.hospital import fresh_state, hospital  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


def test_budget_is_never_exceeded_and_survives_a_restart(hospital):
    study = hospital.chain.hospital.study(hospital.chain.study_id)
    skipped = 3  # a round this node missed: asked for it after the last round, nothing of the budget is left
    for round_number in (r for r in range(1, study.rounds + 1) if r != skipped):
        outcome = hospital.node.train(hospital.config(round_number), fresh_state())
        assert outcome.epsilon_spent <= study.epsilon_budget + 1e-9
    restarted = HospitalNode(NodeSettings.load(hospital.settings.home), ledger=hospital.chain.hospital)
    with pytest.raises(Refusal) as refusal:
        restarted.train(hospital.config(skipped), fresh_state())
    assert refusal.value.code == protocol.BUDGET_SPENT
    with pytest.raises(Refusal) as refusal:  # and a round beyond the study is no round at all
        restarted.train(hospital.config(study.rounds + 1), fresh_state())
    assert refusal.value.code == protocol.BAD_REQUEST
    budget = PrivacyBudget(restarted.store, study_id=hospital.study, epsilon_budget=3.0, delta=1e-5)
    assert budget.spent() == pytest.approx(outcome.epsilon_spent)


def test_epsilon_is_recomputed_from_the_logged_steps(hospital):
    hospital.node.train(hospital.config(1), fresh_state())
    (spend,) = [s for s in hospital.store.spends(hospital.study) if s.release == "train"]  # then the noisy count
    assert spend.steps > 0 and 0 < spend.sample_rate <= 1
    assert epsilon_of([(spend.noise_multiplier, spend.sample_rate, spend.steps)], delta=spend.delta) == pytest.approx(
        spend.epsilon_after
    )
