"""Federated tasks: each defines its features, model, loss, metrics and the purpose it serves.

A task is a plug-in: adding one touches neither the node's nor the coordinator's core.
"""

from __future__ import annotations

from federation.tasks.base import FederatedTask
from federation.tasks.glucose_forecast import GlucoseForecastTask
from federation.tasks.heart_disease import HeartDiseaseTask

TASKS: dict[str, FederatedTask] = {task.task_id: task for task in (HeartDiseaseTask(), GlucoseForecastTask())}


def get_task(task_id: str) -> FederatedTask:
    try:
        return TASKS[task_id]
    except KeyError:
        raise KeyError(f"unknown federated task {task_id!r}; known: {sorted(TASKS)}") from None
