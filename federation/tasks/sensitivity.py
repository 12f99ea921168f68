"""The sensitivity check every task must pass (issue 13 item 4): DP-SGD's noise is calibrated to a clipping
norm C on the assumption that adding or removing one patient moves the sum of clipped per-patient gradients by
at most C. That holds when each patient's loss term depends on that patient alone; a loss that couples patients
(a Cox partial likelihood over risk sets, a contrastive loss over the batch) breaks it silently.

`clipped_sum_sensitivity` measures it on real data: the sum of clipped per-patient gradients (Opacus's own
per-sample gradients, as DP-SGD computes them) over all patients, and again without each of a few patients;
the largest change, in units of C, must be at most the task's declared `sensitivity_bound` (1 unless the task
declares more; the node then scales its noise by the bound, node/trainer.py).
"""

from __future__ import annotations

import copy

import numpy as np
import torch


def _clipped_sum(model: torch.nn.Module, loss_fn, features: np.ndarray, labels: np.ndarray,
                 max_grad_norm: float) -> torch.Tensor:
    from opacus import GradSampleModule  # as DP-SGD computes per-patient gradients

    module = GradSampleModule(copy.deepcopy(model), loss_reduction="mean")
    module.zero_grad()
    loss_fn(module(torch.from_numpy(features)), torch.from_numpy(labels)).backward()
    per_patient = torch.cat([p.grad_sample.reshape(len(features), -1) for p in module.parameters()], dim=1)
    norms = per_patient.norm(dim=1, keepdim=True)
    clipped = per_patient * torch.clamp(max_grad_norm / (norms + 1e-6), max=1.0)
    module._close()
    return clipped.sum(dim=0)


def clipped_sum_sensitivity(model: torch.nn.Module, loss_fn, features: np.ndarray, labels: np.ndarray, *,
                            max_grad_norm: float = 1.0, patients: int = 20, units=None, select=None) -> float:
    """The largest change of the clipped gradient sum when one of the first `patients` patients (first axis)
    is removed, divided by max_grad_norm: at most 1 for a task whose loss terms are per patient.

    With `units` (each row's person), the unit removed is a person with all their rows, and `select(units)` gives
    the indices of the rows that train among those present (as a node picks them: node/privacy.py
    `one_record_per_person`); by default every row trains."""
    units = [str(i) for i in range(len(features))] if units is None else [str(u) for u in units]
    select = select or (lambda present: list(range(len(present))))

    def total(keep: np.ndarray) -> torch.Tensor:
        rows = np.flatnonzero(keep)
        chosen = rows[np.asarray(select([units[i] for i in rows]), dtype=int)]
        return _clipped_sum(model, loss_fn, features[chosen], labels[chosen], max_grad_norm)

    whole = total(np.ones(len(features), dtype=bool))
    worst = 0.0
    for unit in list(dict.fromkeys(units))[:patients]:
        without = total(np.asarray([u != unit for u in units]))
        worst = max(worst, float((whole - without).norm()) / max_grad_norm)
    return worst


def within_declared_bound(task, model: torch.nn.Module, features: np.ndarray, labels: np.ndarray, *,
                          max_grad_norm: float = 1.0, patients: int = 20) -> bool:
    """Whether the measured sensitivity is within what the task declares (a task that declares none fails)."""
    if task.sensitivity_bound is None:
        return False
    measured = clipped_sum_sensitivity(model, task.loss, features, labels, max_grad_norm=max_grad_norm,
                                       patients=patients)
    return measured <= task.sensitivity_bound + 1e-4
