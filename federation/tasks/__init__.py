"""Federated tasks: each is a package here that defines its features, model, loss, metrics, the purpose it
serves and its data path (federation/tasks/data_path.py), and names its task object `TASK`.

A task is a plug-in: adding one adds its package and one line in PACKAGES, and touches neither the node's nor the
coordinator's core (docs/tasks.md, "Adding a condition"). Everything else reaches tasks through TASKS.
"""

from __future__ import annotations

import importlib

from federation.tasks.base import FederatedTask

PACKAGES = (  # one line per task
    "federation.tasks.heart_disease",
    "federation.tasks.glucose_forecast",
    "federation.tasks.breast_cancer_survival",
)

TASKS: dict[str, FederatedTask] = {task.task_id: task for task in (importlib.import_module(p).TASK for p in PACKAGES)}


def get_task(task_id: str) -> FederatedTask:
    try:
        return TASKS[task_id]
    except KeyError:
        raise KeyError(f"unknown federated task {task_id!r}; known: {sorted(TASKS)}") from None
