"""Issue 13 item 4, acted on: a task whose loss couples patients declares its sensitivity bound, and the node
scales DP-SGD's noise by it while charging the budget for the honest noise multiplier (noise / bound)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from federation.tasks.base import FederatedTask
from federation.tasks.sensitivity import clipped_sum_sensitivity, within_declared_bound
from node import trainer
from node.privacy import epsilon_of
from tests.node.hospital import fresh_state, hospital  # noqa: F401 - the fixture

CLIP = 0.5


def cox_loss(risk: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
    """A Cox partial likelihood over the batch: each patient's term depends on everyone still at risk."""
    risk, order = risk.reshape(-1), torch.argsort(time.reshape(-1), descending=True)
    risk = risk[order]
    return -(risk - torch.logcumsumexp(risk, dim=0)).mean()


class CoxTask(FederatedTask):
    task_id = "toy-survival/v1"
    sensitivity_bound = 2.0
    loss = staticmethod(cox_loss)

    def build_model(self):
        return torch.nn.Linear(5, 1)


def _survival_data(patients: int = 60):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(patients, 5)).astype(np.float32)
    time = rng.exponential(size=patients).astype(np.float32)
    return features, time


def _model():
    torch.manual_seed(0)
    model = CoxTask().build_model()
    torch.nn.init.normal_(model.weight, std=0.5)
    return model


def test_the_declared_bound_of_a_coupled_loss_holds_and_the_default_would_not():
    features, time = _survival_data()
    measured = clipped_sum_sensitivity(_model(), cox_loss, features, time, max_grad_norm=CLIP)
    assert 1.0 < measured <= CoxTask.sensitivity_bound
    assert within_declared_bound(CoxTask(), _model(), features, time, max_grad_norm=CLIP)

    class Undeclared(CoxTask):
        sensitivity_bound = 1.0  # what a task that says nothing declares

    assert not within_declared_bound(Undeclared(), _model(), features, time, max_grad_norm=CLIP)


def test_a_bound_of_two_gets_twice_the_noise_and_the_honest_epsilon(monkeypatch):
    from opacus import PrivacyEngine

    used = []
    make_private = PrivacyEngine.make_private

    def spy(self, **kwargs):
        used.append(kwargs["noise_multiplier"])
        return make_private(self, **kwargs)

    monkeypatch.setattr(PrivacyEngine, "make_private", spy)
    features, time = _survival_data()
    result = trainer.train_private(_model(), cox_loss, features, time, epochs=2, learning_rate=0.1,
                                   batch_size=30, max_grad_norm=CLIP, noise_multiplier=1.3, seed=1,
                                   sensitivity_bound=CoxTask.sensitivity_bound)
    assert used == [pytest.approx(2.6)]  # Opacus adds noise of sd 1.3 * 2 * clipping norm
    (sigma, rate, steps), = result.steps_taken
    assert sigma == pytest.approx(1.3) and steps == 4  # charged as noise 1.3 over sensitivity 2 * clipping norm
    honest = epsilon_of(result.steps_taken, delta=1e-5)
    assert honest == pytest.approx(epsilon_of([(1.3, rate, steps)], delta=1e-5))
    assert honest > epsilon_of([(2.6, rate, steps)], delta=1e-5)  # what Opacus's own history would have said


@pytest.mark.parametrize("bad", [0.5, float("nan"), float("inf")])
def test_a_bound_below_one_or_not_a_number_is_refused(bad):
    features, time = _survival_data(10)
    with pytest.raises(ValueError, match="sensitivity bound"):
        trainer.train_private(_model(), cox_loss, features, time, epochs=1, learning_rate=0.1, batch_size=10,
                              max_grad_norm=CLIP, noise_multiplier=1.0, seed=1, sensitivity_bound=bad)


def test_every_real_task_declares_a_bound_and_the_default_is_one():
    from federation.tasks import TASKS

    assert FederatedTask.sensitivity_bound == 1.0
    assert all(task.sensitivity_bound == 1.0 for task in TASKS.values())


@pytest.mark.slow
@pytest.mark.parametrize("chain", ["anvil"], indirect=True)
def test_a_node_refuses_to_train_a_task_that_declares_no_bound(hospital, monkeypatch):
    from federation import protocol
    from federation.tasks import get_task
    from node.consent_gate import Refusal

    monkeypatch.setattr(type(get_task("heart-disease/v1")), "sensitivity_bound", None)
    with pytest.raises(Refusal) as refusal:
        hospital.node.train(hospital.config(1), fresh_state())
    assert refusal.value.code == protocol.STUDY_NOT_ACCEPTED and "sensitivity bound" in refusal.value.reason
    hospital.uses_nothing()
