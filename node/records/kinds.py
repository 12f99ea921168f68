"""Record kinds (node/store.py Patient.kind, a task's `record_kind`) and how each kind's records are split into
cohorts at import: `train`, `test`, or `incomplete` (a record no task can read, kept but never used).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from federation.tasks.glucose_forecast import GlucoseForecastTask
from federation.tasks.heart_disease import SPLIT_SEED, HeartDiseaseTask, flamby_split
from node.records.base import RecordFileError

TWIN_TEST_FRACTION = 1 / 3


@dataclass(frozen=True)
class RecordKind:
    name: str  # Patient.kind
    # Refuses a cohort the kind cannot take (before the file is read): ValueError naming the file.
    check_cohort: Callable[[Path, str | None], None]
    # The cohort of each record (clinical fields in file order), given the cohort asked for or None.
    split: Callable[[list[dict], str | None], list[str]]


def flamby_cohorts(clinicals: list[dict], cohort: str | None = None) -> list[str]:
    """`train` or `test` by FLamby's split of the complete records in file order; the others `incomplete`. A file
    with one complete record (EHRs export a patient a file) cannot be split: that record is `train`."""
    task = HeartDiseaseTask()
    complete = [i for i, clinical in enumerate(clinicals) if task.is_complete(clinical)]
    cohorts = ["incomplete"] * len(clinicals)
    if len(complete) == 1:
        cohorts[complete[0]] = "train"
    elif complete:
        _, labels = task.examples([clinicals[i] for i in complete])
        for i, is_test in zip(complete, flamby_split(labels)):
            cohorts[i] = "test" if is_test else "train"
    return cohorts


def refuse_cohort(path: Path, cohort: str | None) -> None:
    if cohort is not None:
        raise RecordFileError(f"{path}: heart-disease records are split as FLamby does; a cohort cannot be given")


def twin_cohorts(clinicals: list[dict], cohort: str | None = None) -> list[str]:
    """`cohort` for every usable record if given; otherwise a third of the usable records (at least one when there
    are two or more) are `test`, chosen by a random permutation seeded as FLamby's split (43) in file order. A
    record with no complete forecasting window is `incomplete`."""
    import numpy as np

    task = GlucoseForecastTask()
    usable = [i for i, clinical in enumerate(clinicals) if task.is_complete(clinical)]
    cohorts = ["incomplete"] * len(clinicals)
    for i in usable:
        cohorts[i] = cohort or "train"
    if cohort is None and len(usable) >= 2:
        n_test = max(1, round(len(usable) * TWIN_TEST_FRACTION))
        for i in np.random.default_rng(SPLIT_SEED).permutation(usable)[:n_test]:
            cohorts[int(i)] = "test"
    return cohorts


def check_twin_cohort(path: Path, cohort: str | None) -> None:
    if cohort not in (None, "train", "test"):
        raise RecordFileError(f"{Path(path).name}: cohort must be train or test, not {cohort!r}")


HEART_DISEASE = RecordKind(HeartDiseaseTask.record_kind, refuse_cohort, flamby_cohorts)
DIABETES = RecordKind(GlucoseForecastTask.record_kind, check_twin_cohort, twin_cohorts)
