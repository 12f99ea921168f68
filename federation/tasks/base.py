"""The shape every federated task has."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class FederatedTask(Protocol):
    task_id: str  # as recorded on chain in the study, e.g. "heart-disease/v1"
    purpose: str  # HL7 v3 PurposeOfUse code the task serves, e.g. "HRESCH"
    fields: tuple[str, ...]  # the clinical fields of a patient record the task reads

    def build_model(self) -> torch.nn.Module: ...

    def examples(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Raw features and labels of complete records (callers pass only complete ones)."""
        ...

    def is_complete(self, record: dict) -> bool: ...

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...
