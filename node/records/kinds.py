"""Record kinds (node/store.py Patient.kind, a task's `record_kind`) and how each kind's records are split into
cohorts at import: `train`, `test`, or `incomplete` (a record no task can read, kept but never used). The task
owns both (its `split_cohorts` and `check_cohort`); a kind here is the node's handle on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from federation.tasks.base import FederatedTask


@dataclass(frozen=True)
class RecordKind:
    name: str  # Patient.kind
    # Refuses a cohort the kind cannot take (before the file is read): ValueError naming the file.
    check_cohort: Callable[[Path, str | None], None]
    # The cohort of each record (clinical fields in file order), given the cohort asked for or None.
    split: Callable[[list[dict], str | None], list[str]]

    @classmethod
    def of_task(cls, task: FederatedTask) -> RecordKind:
        return cls(task.record_kind, lambda path, cohort: task.check_cohort(Path(path).name, cohort),
                   task.split_cohorts)
