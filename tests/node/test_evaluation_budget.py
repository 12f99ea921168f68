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


# ---- fewer evaluations than rounds, with the planner told (issue 13, session 5) ----

DEMO_TEST_PATIENTS = 225  # the demo's consented test patients over its 4 hospitals (254 in FLamby's split)


def _pooled_accuracy_sd(budget: PrivacyBudget, *, hospitals: int = 4, patients: int = DEMO_TEST_PATIENTS,
                        accuracy: float = 0.8) -> float:
    """The sd of correct/examples over the hospitals' added releases (each noised on its own), to first order."""
    from federation.tasks import get_task
    from node.privacy import release_sds

    sds = release_sds(get_task("heart-disease/v1").evaluation_bounds, noise_multiplier=budget.release_noise())
    return (hospitals * (sds["correct"] ** 2 + (accuracy * sds["examples"]) ** 2)) ** 0.5 / patients


def test_one_planned_evaluation_gets_the_whole_share_and_a_readable_accuracy(store):
    """The demo-sized case (epsilon 3, 5 rounds, 4 hospitals, about 225 test patients, the demo's 50 % share):
    evaluating only the last round gives an accuracy whose noise sd is under 0.1; evaluating all 5 does not."""
    last_only = _budget(store, share=0.5, rounds=5)
    last_only.bind(1, round_number=1)
    every_round = PrivacyBudget(store, study_id=str(StudyId.new()), epsilon_budget=3.0, delta=1e-5,
                                evaluation_share=0.5, rounds=5)
    every_round.bind(0, round_number=1)  # not declared: every round
    assert (last_only.evaluations, every_round.evaluations) == (1, 5)
    assert _pooled_accuracy_sd(last_only) < 0.1 < _pooled_accuracy_sd(every_round)
    # The one evaluation and the one count spend exactly the share (the smallest noise that fits).
    assert epsilon_of([(last_only.release_noise(), 1.0, 2)], delta=1e-5) == pytest.approx(1.5, rel=0.01)
    two = _budget(store, share=0.5, rounds=5)  # what the demo evaluates: the revocation round and the last
    two.bind(2, round_number=1)
    assert _pooled_accuracy_sd(last_only) < _pooled_accuracy_sd(two) < 0.12
    # At the contract's default 10 % share the same release is noise: the demo asks for more (docs/privacy.md).
    default = _budget(store, share=0.1, rounds=5)
    default.bind(1, round_number=1)
    assert _pooled_accuracy_sd(default) > 0.3


def test_training_plans_room_for_the_declared_evaluations_only(store):
    one = _budget(store, rounds=5)
    one.bind(1, round_number=1)
    five = _budget(store, rounds=5)
    five.bind(5, round_number=1)
    plan_one = one.plan(sample_rate=1.0, steps_per_round=3, rounds_left=5)
    total = epsilon_of([(plan_one.noise_multiplier, 1.0, 15), (one.release_noise(), 1.0, 2)], delta=1e-5)
    assert total <= 3.0 and one.release_noise() < five.release_noise()


def test_the_declared_evaluations_are_fixed_once_and_no_more_are_answered(store):
    from node.privacy import PlanConflict

    budget = _budget(store, epsilon=3.0, share=0.5, rounds=5)
    assert budget.bind(1, round_number=1) == 1
    fresh = PrivacyBudget(store, study_id=budget.study_id, epsilon_budget=3.0, delta=1e-5, evaluation_share=0.5,
                          rounds=5)  # a later request, its own process
    with pytest.raises(PlanConflict, match="fixed at 1"):
        fresh.bind(5, round_number=2)  # a coordinator that declared 1 cannot later ask for 5
    with pytest.raises(PlanConflict, match="fixed at 1"):
        fresh.bind(0, round_number=2)
    assert fresh.bind(1, round_number=3) == 1
    fresh.charge(5, "evaluate")
    with pytest.raises(BudgetSpent, match="planned evaluation"):
        fresh.charge(4, "evaluate")  # budget is left (training spent nothing here), but the plan said one
    assert [r.release for r in fresh.releases()] == ["evaluate"]
    for bad in (6, -1):
        with pytest.raises(PlanConflict):
            _budget(store, rounds=5).bind(bad, round_number=1)


def test_an_account_that_spent_before_plans_were_fixed_stays_planned_for_every_round(store):
    from node.privacy import PlanConflict

    budget = _budget(store, rounds=5)
    budget.charge(1, "evaluate")  # the account of a node from before this change
    with pytest.raises(PlanConflict, match="fixed at 5"):
        PrivacyBudget(store, study_id=budget.study_id, epsilon_budget=3.0, delta=1e-5, evaluation_share=0.1,
                      rounds=5).bind(1, round_number=2)
