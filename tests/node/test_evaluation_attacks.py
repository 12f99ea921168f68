"""Attacks on evaluation from issue 13 (item 1), as a dishonest coordinator would run them.

Before: `evaluate` answered any number of times, for any round and block, with exact sums. A test patient's
revocation (public on chain) between two evaluations gave away that patient's diagnosis in 2 queries, and
crafted logistic weights with a binary search over 364 evaluations gave back all 13 features of a patient to
+-0.001. Now a node evaluates a round once, at the block the round's training pinned, and what it releases is a
Gaussian release of per-patient-clipped sums charged to the study's privacy account.
"""

from __future__ import annotations

import dataclasses
import statistics

import pytest
import torch

from federation import protocol
from federation.tasks import get_task
from node.consent_gate import Refusal
from node.models_store import models_dir
from node.privacy import PrivacyBudget, noisy_sums
from tests.node.hospital import fresh_state, hospital  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

TASK = get_task("heart-disease/v1")


def _budget(hospital) -> PrivacyBudget:
    terms = hospital.chain.hospital.study(hospital.chain.study_id)
    return PrivacyBudget.of_study(hospital.store, terms)


def _refused(hospital, config, state) -> Refusal:
    with pytest.raises(Refusal) as refusal:
        hospital.node.evaluate(config, state)
    return refusal.value


def test_attack_revocation_between_two_evaluations_second_is_refused(hospital):
    """The 2-query diagnosis attack: evaluate, wait for a test patient's revocation, evaluate the same round
    again and subtract. The second evaluation is refused and uses no data."""
    before = hospital.node.evaluate(hospital.config(1), fresh_state())
    test_numbers = {p.record_number for p in hospital.store.candidates("test")}
    leaving = next(n for n in hospital.consenting if n in test_numbers)
    revoked_at = hospital.revoke(leaving)
    refusal = _refused(hospital, hospital.config(1, block=revoked_at), fresh_state())
    assert refusal.code == protocol.BAD_REQUEST and "already evaluated" in refusal.reason
    assert [u.phase for u in hospital.store.usage()] == ["evaluate"]  # the second one read nobody
    assert [r.release for r in _budget(hospital).releases()] == ["evaluate"]
    # What the first one released is noisy: the one patient's "correct" is buried in noise of sd >> 1.
    sd = _budget(hospital).release_noise() * len(TASK.evaluation_bounds) ** 0.5
    assert sd > 20
    assert before.sums["correct"] != int(before.sums["correct"])  # not an exact count


def test_attack_replaying_an_evaluation_at_the_same_block_is_refused(hospital):
    config = hospital.config(1)
    hospital.node.evaluate(config, fresh_state())
    assert "already evaluated" in _refused(hospital, config, fresh_state()).reason


def test_attack_evaluation_at_another_block_than_training_pinned_is_refused(hospital):
    trained = hospital.config(1)
    hospital.node.train(trained, fresh_state())
    hospital.chain.hospital.block_number()
    later = hospital.revoke(next(iter(hospital.consenting)))  # a block after training's
    refusal = _refused(hospital, hospital.config(1, block=later), fresh_state())
    assert refusal.code == protocol.BAD_REQUEST and "same block" in refusal.reason
    assert [u.phase for u in hospital.store.usage()] == ["train"]


def _threshold_model(feature: int, threshold: float) -> dict[str, torch.Tensor]:
    """Logistic weights that predict 1 exactly when (normalised) feature `feature` exceeds `threshold`."""
    weight = torch.zeros(1, TASK.build_model().in_features)
    weight[0, feature] = 1000.0
    return {"weight": weight, "bias": torch.tensor([-1000.0 * threshold])}


def test_attack_binary_search_reconstruction_gets_one_noisy_answer(hospital):
    """The 364-query reconstruction: a binary search on one feature with threshold models, one evaluation per
    step. Only the first evaluation is answered, so no search can run, and that answer's noise is far larger
    than the one patient the search would have to tell apart."""
    low, high, answers = -5.0, 5.0, []
    for step in range(28):  # 28 halvings of [-5, 5] would reach +-0.001 with exact answers
        middle = (low + high) / 2
        config = hospital.config(1)
        try:
            outcome = hospital.node.evaluate(config, _threshold_model(feature=0, threshold=middle))
        except Refusal as refusal:
            assert refusal.code == protocol.BAD_REQUEST
            continue
        answers.append(outcome.sums["correct"])
    assert len(answers) == 1
    assert len(hospital.store.usage()) == 1
    assert len(list(models_dir(hospital.settings.home).glob("*.pt"))) <= 1  # no model file per call


def test_one_release_does_not_tell_one_patient_apart():
    """Neighbouring test sets (one patient's prediction flips "correct" by 1): the best threshold test on one
    noisy release tells them apart barely better than a coin, as the release's epsilon says."""
    noise = 40.0  # the release noise of an epsilon-3 study with a 10 % evaluation share over 10 rounds
    base = {"examples": 50.0, "correct": 30.0, "loss-sum": 20.0, "positives": 25.0}
    with_patient = {**base, "correct": 31.0}
    draws = 400
    a = [noisy_sums(base, TASK.evaluation_bounds, noise_multiplier=noise)["correct"] for _ in range(draws)]
    b = [noisy_sums(with_patient, TASK.evaluation_bounds, noise_multiplier=noise)["correct"] for _ in range(draws)]
    threshold = 30.5
    advantage = sum(x > threshold for x in b) / draws - sum(x > threshold for x in a) / draws
    assert abs(advantage) < 0.15
    assert statistics.stdev(a) > 50  # noise * sqrt(4 sums) * bound 1


def test_every_release_is_in_the_account_with_its_cost(hospital):
    hospital.node.train(hospital.config(1), fresh_state())
    hospital.node.evaluate(hospital.config(1, block=hospital.store.usage()[0].block), fresh_state())
    releases = _budget(hospital).releases()
    assert [r.release for r in releases] == ["train", "count", "evaluate"]
    assert all(b.epsilon_after > a.epsilon_after for a, b in zip(releases, releases[1:]))
    assert releases[-1].epsilon_after <= 3.0


@pytest.mark.parametrize("chain", ["anvil"], indirect=True)  # the node's logic: one chain is enough
def test_attack_declaring_one_evaluation_then_asking_for_more_is_refused_before_reading(hospital):
    """A coordinator that declares one evaluation (so that the planner spends the whole share on it) and then
    asks for another round's evaluation, or declares more later: refused, nothing read, one release only."""
    one = dataclasses.replace(hospital.config(1), evaluations=1)
    hospital.node.evaluate(one, fresh_state())
    refusal = _refused(hospital, dataclasses.replace(hospital.config(2), evaluations=1), fresh_state())
    assert refusal.code == protocol.BUDGET_SPENT and "planned evaluation" in refusal.reason
    refusal = _refused(hospital, dataclasses.replace(hospital.config(2), evaluations=5), fresh_state())
    assert refusal.code == protocol.BAD_REQUEST and "fixed at 1" in refusal.reason
    assert [u.phase for u in hospital.store.usage_log()] == ["evaluate"]
    assert [r.release for r in _budget(hospital).releases()] == ["evaluate"]
