"""The latest global model this node was sent for each study: `<node home>/models/<study-id>.pt`.

A model is kept only after a successful, consent-checked evaluation (node/service.py `evaluate`): the
aggregated global weights of that round, the normaliser the round used (shift and scale of the task's
features; for heart disease the mean and standard deviation of the consented training patients at the
round's pinned block) and which task, study, round and block it came from. Twins read it back
(`latest_model(home, task_id)`: the newest across the studies of a task, by pinned block).

Files are torch state files read with `weights_only=True` (no pickled code runs), written atomically
(a temporary file in the same folder, then a rename) and readable by the node's owner only: the
normaliser is an aggregate of patients' data that never leaves the node.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("twinledger.node")
MODELS_DIR = "models"
STUDY_ID = re.compile(r"^0x[0-9a-f]{64}$")


@dataclass(frozen=True)
class SavedModel:
    task_id: str
    study_id: str  # 0x-hex
    round: int
    block: int  # the round's pinned block
    saved_at: datetime
    state: dict[str, torch.Tensor]
    shift: np.ndarray  # features are used as (features - shift) / scale
    scale: np.ndarray
    path: Path

    def module(self) -> torch.nn.Module:
        """The task's model with these weights, taking raw features (the normaliser applied inside)."""
        from federation.tasks import get_task

        model = get_task(self.task_id).build_model()
        model.load_state_dict({k.removeprefix("_module."): v for k, v in self.state.items()})
        model.eval()
        return Normalised(model, self.shift, self.scale)


class Normalised(torch.nn.Module):
    """(features - shift) / scale, then the model: as the node fed the round's model."""

    def __init__(self, model: torch.nn.Module, shift: np.ndarray, scale: np.ndarray):
        super().__init__()
        self.model = model
        self.register_buffer("shift", torch.as_tensor(np.asarray(shift, dtype=np.float32)))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, dtype=np.float32)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model((features - self.shift) / self.scale)


def models_dir(home: Path) -> Path:
    return Path(home) / MODELS_DIR


def save_model(home: Path, *, task_id: str, study_id: str, round: int, block: int,
               state: dict[str, torch.Tensor], shift, scale) -> Path | None:
    """Write the study's model file unless it already holds a later round; returns its path (None: kept the later)."""
    study_id = study_id.lower()
    if not STUDY_ID.match(study_id):
        raise ValueError(f"not a study id: {study_id!r}")
    folder = models_dir(home)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{study_id}.pt"
    if path.exists():
        kept = read_model(path)
        if kept is not None and kept.round > round:
            return None
    document = {
        "task_id": task_id, "study_id": study_id, "round": int(round), "block": int(block),
        "saved_at": datetime.now(timezone.utc).isoformat(),
        "state": {k: v.detach().cpu().clone() for k, v in state.items()},
        "shift": torch.as_tensor(np.asarray(shift, dtype=np.float32)),
        "scale": torch.as_tensor(np.asarray(scale, dtype=np.float32)),
    }
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{study_id[:10]}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp: mode 0600
            torch.save(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_model(path: Path) -> SavedModel | None:
    """A saved model, or None (with a warning in the log) if the file is damaged or not one of ours."""
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
        return SavedModel(
            task_id=str(document["task_id"]), study_id=str(document["study_id"]), round=int(document["round"]),
            block=int(document["block"]), saved_at=datetime.fromisoformat(document["saved_at"]),
            state=dict(document["state"]), shift=document["shift"].numpy(), scale=document["scale"].numpy(),
            path=Path(path))
    except Exception as exc:  # noqa: BLE001 - torch raises several unrelated types for a damaged file
        log.warning("ignoring the model file %s: %s (%s)", path, type(exc).__name__, exc)
        return None


def saved_models(home: Path) -> list[SavedModel]:
    folder = models_dir(home)
    if not folder.is_dir():
        return []
    found = (read_model(p) for p in sorted(folder.glob("0x*.pt")))
    return [m for m in found if m is not None]


def latest_model(home: Path, task_id: str) -> SavedModel | None:
    """The newest model of this task across its studies (latest pinned block, then latest saved), or None."""
    candidates = [m for m in saved_models(home) if m.task_id == task_id]
    return max(candidates, key=lambda m: (m.block, m.saved_at), default=None)
