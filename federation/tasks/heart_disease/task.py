"""Coronary artery disease from the UCI Heart Disease records, as in FLamby's Fed-Heart-Disease.

Preprocessing (du Terrail et al., NeurIPS 2022 Datasets and Benchmarks): columns slope, ca and thal are
not used; records missing any other value are incomplete; the label is num > 0; chest-pain type (cp)
and resting ECG (restecg) are one-hot encoded with their first level dropped (13 features); each
hospital splits its complete records 66/34 into train and test, stratified on the label, with
random_state=43. FLamby standardises features with each hospital's training mean and standard deviation;
here that would be a data-dependent release outside the privacy account (issue 13), so every node
normalises with the declared public ranges below instead: nothing is fitted on patients.

The ranges (PUBLIC_RANGES) are declared, not measured on any hospital's records: the attributes and their
units are those of the UCI Heart Disease documentation (Detrano et al. 1989; heart-disease.names in the
UCI Machine Learning Repository, https://archive.ics.uci.edu/dataset/45/heart+disease: age in years,
trestbps resting blood pressure in mm Hg on admission, chol serum cholesterol in mg/dl, thalach maximum
heart rate achieved in beats/min, oldpeak ST depression induced by exercise relative to rest in mm); the
bounds are the usual adult clinical spans of those measurements (a maximum heart rate up to 220 beats/min,
the age-predicted maximum 220 - age at age 0). A value outside its range is kept, only scaled: the ranges
fix the scale, they do not clip.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from federation.tasks.base import BinaryClassificationTask
from federation.tasks.data_path import DemoData, RecordFileError, Subgroup
from federation.tasks.standardise import standardise as standardiser  # noqa: F401 (FLamby's per-hospital standardisation)

UCI_COLUMNS = (
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak", "slope", "ca", "thal", "num",
)
# What each field may hold; anything else is a malformed record.
FIELD_RANGES = {
    "age": (0, 120), "sex": (0, 1), "cp": (1, 4), "trestbps": (0, 300), "chol": (0, 1000), "fbs": (0, 1),
    "restecg": (0, 2), "thalach": (0, 300), "exang": (0, 1), "oldpeak": (-10, 10), "slope": (1, 3),
    "ca": (0, 4), "thal": (3, 7), "num": (0, 4),
}
INPUT_FIELDS = ("age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak")
FEATURE_NAMES = (
    "age", "sex", "cp_2", "cp_3", "cp_4", "trestbps", "chol", "fbs", "restecg_1", "restecg_2", "thalach", "exang", "oldpeak",
)
# Declared ranges of the continuous fields (see the module docstring); 0/1 features use (0, 1).
PUBLIC_RANGES = {"age": (20.0, 80.0), "trestbps": (80.0, 200.0), "chol": (100.0, 600.0),
                 "thalach": (60.0, 220.0), "oldpeak": (-3.0, 7.0)}
AGE_BANDS = ("under 45", "45-59", "60 and over")  # the fairness subgroups' age bands (years)
TRAIN_FRACTION = 0.66
SPLIT_SEED = 43


class HeartDiseaseTask(BinaryClassificationTask):
    task_id = "heart-disease/v1"
    purpose = "HRESCH"
    record_kind = "heart-disease"
    fields = INPUT_FIELDS + ("num",)
    evaluation_reads_training_data = False  # public ranges: nothing is fitted on training patients
    description = "predicting coronary artery disease from heart examination results"
    data_read = ("your age and sex, and results of your heart examination: type of chest pain, resting blood pressure, "
                 "cholesterol, fasting blood sugar, resting ECG, maximum heart rate, chest pain during exercise, "
                 "ST depression, and the diagnosis")
    data_categories = {"demographics": 0, "vital-signs": 1, "laboratory": 2, "diagnoses": 3, "ecg": 4,
                       "exercise-test": 5}
    demo_data = DemoData(package="deploy", directory="data/heart-disease", hospitals={
        "cleveland": "processed.cleveland.data", "hungary": "processed.hungarian.data",
        "switzerland": "processed.switzerland.data", "va": "processed.va.data"})
    subgroups = (Subgroup("sex", ("female", "male"), lambda r: {0: "female", 1: "male"}.get(r.get("sex"))),
                 Subgroup("age band", AGE_BANDS, lambda r: age_band(r.get("age"))))

    @property
    def readers(self):
        from federation.tasks.heart_disease.readers import READERS

        return READERS

    def split_cohorts(self, clinicals: list[dict], cohort: str | None = None) -> list[str]:
        """`train` or `test` by FLamby's split of the complete records in file order; the others `incomplete`. A
        file with one complete record (EHRs export a patient a file) cannot be split: that record is `train`."""
        complete = [i for i, clinical in enumerate(clinicals) if self.is_complete(clinical)]
        cohorts = ["incomplete"] * len(clinicals)
        if len(complete) == 1:
            cohorts[complete[0]] = "train"
        elif complete:
            _, labels = self.examples([clinicals[i] for i in complete])
            for i, is_test in zip(complete, flamby_split(labels)):
                cohorts[i] = "test" if is_test else "train"
        return cohorts

    def check_cohort(self, source: str, cohort: str | None) -> None:
        if cohort is not None:
            raise RecordFileError(f"{source}: heart-disease records are split as FLamby does; a cohort cannot be given")

    def build_model(self) -> torch.nn.Module:
        # Logistic regression, FLamby's baseline model for this data set.
        return torch.nn.Linear(len(FEATURE_NAMES), 1)

    def is_complete(self, record: dict) -> bool:
        return all(_is_number(record.get(field)) for field in self.fields)

    def examples(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        features = np.array([_encode(r) for r in records], dtype=np.float32).reshape(-1, len(FEATURE_NAMES))
        labels = np.array([float(r["num"] > 0) for r in records], dtype=np.float32)
        return features, labels

    def normaliser(self, train_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return public_normaliser()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.reshape(-1), labels.reshape(-1))


def age_band(age) -> str | None:
    """Under 45, 45-59, 60 and over (years): bands wide enough that each hospital's test set has patients in each."""
    if not _is_number(age):
        return None
    return "under 45" if age < 45 else "45-59" if age < 60 else "60 and over"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _encode(record: dict) -> list[float]:
    cp, restecg = int(record["cp"]), int(record["restecg"])
    return [
        record["age"], record["sex"],
        float(cp == 2), float(cp == 3), float(cp == 4),
        record["trestbps"], record["chol"], record["fbs"],
        float(restecg == 1), float(restecg == 2),
        record["thalach"], record["exang"], record["oldpeak"],
    ]


def flamby_split(labels: np.ndarray) -> np.ndarray:
    """FLamby's per-hospital split of its complete records, in file order: True where a record is a test record."""
    from sklearn.model_selection import train_test_split  # only at import time: keeps ClientApp start-up light

    n = len(labels)
    binary = (np.asarray(labels) > 0).astype(int)
    levels, counts = np.unique(binary, return_counts=True)
    stratify = binary if len(levels) > 1 and all(counts > 2) else None
    _, test_indices = train_test_split(
        np.arange(n),
        test_size=1.0 - TRAIN_FRACTION,
        train_size=TRAIN_FRACTION,
        random_state=SPLIT_SEED,
        shuffle=True,
        stratify=stratify,
    )
    is_test = np.zeros(n, dtype=bool)
    is_test[test_indices] = True
    return is_test


def public_normaliser() -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) from the declared ranges alone: a continuous range maps to [-2, 2] (about the span of a
    standardised feature), a 0/1 feature to [-1, 1]."""
    shift, scale = [], []
    for name in FEATURE_NAMES:
        low, high = PUBLIC_RANGES.get(name, (0.0, 1.0))
        shift.append((low + high) / 2)
        scale.append((high - low) / (4 if name in PUBLIC_RANGES else 2))
    return np.array(shift, np.float32), np.array(scale, np.float32)
