"""The heart-disease patient's twin: their risk under the current federated model, and how it changes if
modifiable factors reach treatment targets.

The model is the federated task's (federation.tasks.heart_disease: logistic regression on 13 features,
each standardised with the hospital's own training mean and standard deviation, as node/service.py does).
A what-if sets resting blood pressure and/or serum cholesterol to a treatment target (only where the
patient is above it) and reads the model again.

ASSOCIATIONAL, NOT CAUSAL: the model learned how coronary artery disease co-occurs with these values in
the UCI records; lowering a number in the model's input is not an intervention on the patient, and the
difference is not the effect treatment would have. Every answer carries this label.

Targets: systolic blood pressure below 130 mmHg (Whelton et al., 2017 ACC/AHA hypertension guideline);
total cholesterol below 200 mg/dL ("desirable", NCEP ATP III, 2002). Cholesterol 0 in the UCI data means
"not measured" (Switzerland): no cholesterol what-if for such a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from federation.tasks.heart_disease import FEATURE_NAMES, FIELD_RANGES, INPUT_FIELDS, HeartDiseaseTask, standardiser

ASSOCIATIONAL_NOTE = ("Associational, not causal: this is how the federated model's predicted risk changes when "
                      "these inputs change; it is not the effect treating the patient would have.")
TREATMENT_TARGETS = {"trestbps": 130.0, "chol": 200.0}  # mmHg, mg/dL
TARGET_LABELS = {"trestbps": "resting systolic blood pressure at 130 mmHg",
                 "chol": "total cholesterol at 200 mg/dL"}


class HeartRecordError(ValueError):
    """A heart-disease record or model the twin cannot use; the message says why."""


def check_record(record: dict) -> None:
    for name in INPUT_FIELDS:
        value = record.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value):
            raise HeartRecordError(f"field {name!r} is missing or not a number")
        low, high = FIELD_RANGES[name]
        if not low <= value <= high:
            raise HeartRecordError(f"field {name!r} = {value} lies outside {low}-{high}")


@dataclass(frozen=True)
class HeartRiskModel:
    weights: np.ndarray  # (13,) on standardised features
    bias: float
    mean: np.ndarray  # the hospital's training means, (13,)
    std: np.ndarray

    @classmethod
    def from_state_dict(cls, state: dict, training_records: list[dict]) -> "HeartRiskModel":
        model = HeartDiseaseTask().build_model()
        state = {k.removeprefix("_module."): v for k, v in state.items()}
        try:
            model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        except (RuntimeError, KeyError) as exc:
            raise HeartRecordError(f"not a heart-disease/v1 model state: {exc}") from None
        usable = [r for r in training_records if HeartDiseaseTask().is_complete(r)]
        if len(usable) < 2:
            raise HeartRecordError("the hospital needs at least 2 complete training records to standardise with")
        task = HeartDiseaseTask()
        features, _ = task.examples(usable)
        mean, std = getattr(task, "normaliser", standardiser)(features)  # as the node standardises for training
        return cls(model.weight.detach().numpy().reshape(-1).astype(float), float(model.bias.detach().item()),
                   mean.astype(float), std.astype(float))

    def risk(self, record: dict) -> float:
        return float(1.0 / (1.0 + np.exp(-self.logit(record))))

    def logit(self, record: dict) -> float:
        return float(self.contributions(record).sum() + self.bias)

    def contributions(self, record: dict) -> np.ndarray:
        features, _ = HeartDiseaseTask().examples([{**record, "num": 0}])
        return self.weights * (features[0] - self.mean) / self.std


def load_model_state(path: Path) -> dict:
    """A coordinator run's model.pt (a torch state dict), read without executing pickled code."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HeartRecordError(f"{path}: no such model file") from None
    except Exception as exc:  # torch raises several unrelated types for a damaged file
        raise HeartRecordError(f"{path}: not a readable model state ({type(exc).__name__})") from None


@dataclass(frozen=True)
class RiskScenario:
    name: str
    changes: dict  # field -> (from, to)
    risk: float
    change_in_risk: float


@dataclass(frozen=True)
class HeartRiskResult:
    patient_id: str
    risk: float
    scenarios: list[RiskScenario]
    contributions: dict  # feature -> contribution to the logit (standardised weight x value)
    note: str = ASSOCIATIONAL_NOTE


def heart_whatif(model: HeartRiskModel, record: dict, *, patient_id: str = "", targets: dict | None = None) -> HeartRiskResult:
    check_record(record)
    targets = {**TREATMENT_TARGETS, **(targets or {})}
    for name, value in targets.items():
        if name not in TREATMENT_TARGETS:
            raise HeartRecordError(f"no treatment target for {name!r}; modifiable: {', '.join(TREATMENT_TARGETS)}")
        low, high = FIELD_RANGES[name]
        if not (isinstance(value, (int, float)) and low < value <= high):
            raise HeartRecordError(f"target for {name!r} must lie in {low}-{high}")
    baseline = model.risk(record)
    changes = {}
    for name, target in targets.items():
        value = float(record[name])
        if name == "chol" and value == 0:
            continue  # not measured
        if value > target:
            changes[name] = (value, float(target))
    scenarios = []
    for name, (old, new) in changes.items():
        risk = model.risk({**record, name: new})
        scenarios.append(RiskScenario(TARGET_LABELS[name], {name: (old, new)}, risk, risk - baseline))
    if len(changes) > 1:
        risk = model.risk({**record, **{k: new for k, (_, new) in changes.items()}})
        scenarios.append(RiskScenario("all modifiable factors at target", dict(changes), risk, risk - baseline))
    contributions = dict(zip(FEATURE_NAMES, (float(c) for c in model.contributions(record))))
    return HeartRiskResult(patient_id, baseline, scenarios, contributions)
