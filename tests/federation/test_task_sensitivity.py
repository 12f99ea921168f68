"""Issue 13 item 4: every task's per-patient sensitivity is measured on real data, not assumed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from federation.tasks import TASKS
from federation.tasks.data_path import demo_records
from federation.tasks.heart_disease import HeartDiseaseTask
from federation.tasks.sensitivity import clipped_sum_sensitivity

CLIP = 0.5  # small enough that most patients' gradients are clipped: the bound is tight where it matters


def _heart_examples():
    from benchmarks.flamby import load_hospital_data

    data = load_hospital_data()["cleveland"]
    shift, scale = HeartDiseaseTask().normaliser(None)
    return ((data.raw_train_x - shift) / scale).astype(np.float32), data.train_y


def _glucose_examples():
    from node.twins.cohort import simulate_patients

    records = [r.to_clinical() for r in simulate_patients(["adult#001", "adult#002", "child#004"], days=1, seed=2)]
    return TASKS["glucose-forecast/v1"].training_examples(records)


REAL_DATA = {"heart-disease/v1": _heart_examples, "glucose-forecast/v1": _glucose_examples}


def _demo_examples(task_id: str, scratch: Path):
    """A task's own demo data, read by its own readers (federation/tasks/data_path.py demo_records): a new task
    brings its data in its package, so registering it is all this check needs."""
    task = TASKS[task_id]
    records = [r for rows in demo_records(task, scratch).values() for r in rows if task.is_complete(r)]
    return task.training_examples(records) if records else None


def test_every_task_has_real_data_for_its_sensitivity_check(tmp_path):
    without = [t for t in TASKS if t not in REAL_DATA and _demo_examples(t, tmp_path / t.replace("/", "-")) is None]
    assert without == []


@pytest.mark.slow
@pytest.mark.parametrize("task_id", sorted(TASKS))
def test_one_patient_moves_the_clipped_gradient_sum_by_at_most_the_clipping_norm(task_id, tmp_path):
    task = TASKS[task_id]
    features, labels = REAL_DATA[task_id]() if task_id in REAL_DATA else _demo_examples(task_id, tmp_path)
    torch.manual_seed(0)
    model = task.build_model()
    torch.nn.init.normal_(model.weight, std=0.5)  # away from the zero model, where gradients are smallest
    assert clipped_sum_sensitivity(model, task.loss, features, labels, max_grad_norm=CLIP) <= 1.0 + 1e-4


@pytest.mark.slow
def test_the_check_catches_a_loss_that_couples_patients():
    """A Cox partial likelihood couples each patient to everyone still at risk: the harness must fail it."""

    def cox_loss(risk: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        risk, order = risk.reshape(-1), torch.argsort(time.reshape(-1), descending=True)
        risk = risk[order]
        return -(risk - torch.logcumsumexp(risk, dim=0)).mean()

    features, _ = _heart_examples()
    time = np.random.default_rng(0).exponential(size=len(features)).astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.Linear(features.shape[1], 1)
    assert clipped_sum_sensitivity(model, cox_loss, features, time, max_grad_norm=CLIP) > 1.0
