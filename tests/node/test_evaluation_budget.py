"""The study's one privacy account (issue 13 items 1-2): the evaluation share on chain, what the planner keeps
for evaluations, and that every release is charged and none beyond the budget."""

from __future__ import annotations

import pytest

from contracts.ledger import ContractRejected, LedgerError
from federation.ids import StudyId
from node.privacy import BudgetSpent, PrivacyBudget, epsilon_of, noisy_sums, release_noise_multiplier
from node.store import Store
from tests.node.hospital import FAR


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'node.db'}")


def _budget(store, **terms) -> PrivacyBudget:
    return PrivacyBudget(store, study_id=str(StudyId.new()), epsilon_budget=terms.get("epsilon", 3.0), delta=1e-5,
                         evaluation_share=terms.get("share", 0.1), rounds=terms.get("rounds", 5))


def test_the_evaluation_releases_of_a_study_fit_in_its_share(store):
    budget = _budget(store)
    sigma = budget.release_noise()
    assert epsilon_of([(sigma, 1.0, budget.rounds + 1)], delta=1e-5) <= 0.3 + 1e-9
    assert epsilon_of([(sigma * 0.99, 1.0, budget.rounds + 1)], delta=1e-5) > 0.3  # the smallest noise that fits


def test_training_keeps_room_for_the_evaluations_still_to_come(store):
    budget = _budget(store)
    plan = budget.plan(sample_rate=1.0, steps_per_round=3, rounds_left=5)
    total = epsilon_of([(plan.noise_multiplier, 1.0, 15), (budget.release_noise(), 1.0, 6)], delta=1e-5)
    assert total <= 3.0
    without_evaluation = _budget(store, share=0.0).plan(sample_rate=1.0, steps_per_round=3, rounds_left=5)
    assert plan.noise_multiplier > without_evaluation.noise_multiplier


def test_every_release_is_charged_and_none_beyond_the_budget(store):
    budget = _budget(store, epsilon=1.0, share=0.99, rounds=1)  # room for one evaluation and one count
    budget.charge(1, "evaluate")
    budget.charge(1, "count", value=41.3)
    assert [r.release for r in budget.releases()] == ["evaluate", "count"]
    assert budget.released("count")[0].value == 41.3 and budget.spent() <= 1.0
    with pytest.raises(BudgetSpent):  # a third release would pass the budget: refused and not recorded
        budget.charge(1, "evaluate")
    assert len(budget.releases()) == 2


def test_a_study_without_evaluation_share_gives_evaluation_nothing(store):
    with pytest.raises(BudgetSpent):
        _budget(store, share=0.0).charge(1, "evaluate")
    with pytest.raises(BudgetSpent):
        release_noise_multiplier(epsilon=0.0, delta=1e-5, releases=3)


def test_noisy_sums_noise_every_bounded_sum_and_drop_nothing():
    sums = {"examples": 10.0, "correct": 7.0, "loss-sum": 4.0, "positives": 5.0}
    bounds = {"examples": 1.0, "correct": 1.0, "loss-sum": 10.0, "positives": 1.0}
    noisy = noisy_sums(sums, bounds, noise_multiplier=5.0)
    assert set(noisy) == set(bounds) and all(noisy[k] != sums[k] for k in sums)


@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)
def test_the_evaluation_share_is_on_chain_and_locked_once_accepted(chain):
    terms = chain.hospital.study(chain.study_id)
    assert terms.evaluation_share == pytest.approx(0.10)  # the contract's default
    with pytest.raises((ContractRejected, LedgerError)):  # accepted: the split of the budget cannot change
        chain.operator.set_study_evaluation_share(chain.study_id, percent=50)
    fresh = StudyId.new()
    chain.operator.propose_study(fresh, purpose="HRESCH", task_id="heart-disease/v1", epsilon_budget=3,
                                 delta_exponent=5, rounds=2, ends_at=FAR)
    chain.operator.set_study_evaluation_share(fresh, percent=25)
    assert chain.hospital.study(fresh).evaluation_share == pytest.approx(0.25)
    for bad in (0, 100):
        with pytest.raises((ContractRejected, LedgerError)):
            chain.operator.set_study_evaluation_share(fresh, percent=bad)
