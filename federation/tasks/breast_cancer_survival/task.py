"""Recurrence-free survival after primary breast cancer ("breast-cancer-survival/v1"), on the GBSG2 records.

**Model.** A discrete-time proportional-odds hazard model: follow-up is cut into INTERVALS of one year (the last
one open), and the logit of the hazard h_k(x), the probability of the event in year k given none before, is a
baseline for year k plus one linear risk score of the features (the discrete-time analogue of a Cox model; a
free linear layer per year, tried first, reached a C-index of 0.681 on the pooled test set against 0.717). Survival to the end of year k is the product of (1 - h) over years up to k. A patient's risk
(for the concordance index) is the predicted probability of the event within RISK_HORIZON_YEARS.

**Loss: one patient's person-period likelihood.** A patient followed into interval j contributes -log(1 - h_k)
for every year k < j they lived through and, if the event was observed in year j, -log h_j; a patient censored
in year j contributes nothing for year j. This depends on that patient alone (unlike a Cox partial likelihood,
whose risk sets couple every patient to everyone still followed), so DP-SGD's clipping bounds each patient's
influence: federation/tasks/sensitivity.py checks it on the demo data.

**Features** (9), scaled with declared constants, not fitted on any patient: hormonal therapy (0/1),
(age - 50) / 10, postmenopausal (0/1), log tumour size in mm minus log 25, grade II and grade III (0/1),
log(1 + positive nodes) - log 4, and log(1 + receptor level) - log 40 for progesterone and oestrogen receptors
(centres: round typical values of those measurements in breast cancer series, e.g. the median tumour of
about 25 mm; scale 1 on the log scale).

**Metric.** The concordance index (Harrell's C) over the pooled test sets, computed from additive counts of
patients by follow-up year and risk fifth (concordance.py), with the bound the binning puts on its error. FedAvg
weighs hospitals by their training patients' observed events: in survival data the events carry the
information (a censored patient adds only the years they lived through).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from federation.tasks.base import FederatedTask, Metric
from federation.tasks.breast_cancer_survival.concordance import binned_concordance
from federation.tasks.breast_cancer_survival.readers import is_gbsg2_csv, read_gbsg2_csv
from federation.tasks.data_path import DemoData, RecordReader

INTERVAL_DAYS = 365.25
INTERVALS = 8  # years 1-7 and "8 or later": GBSG2's follow-up ends at 7.3 years
RISK_HORIZON_YEARS = 5
RISK_BINS = 5  # predicted 5-year event probability in fifths: [0, 0.2), ..., [0.8, 1]
TEST_FRACTION, SPLIT_SEED = 1 / 3, 43
LOSS_CLIP = 20.0  # a patient's negative log-likelihood counts at most this much in the evaluation sums
FIELDS = ("horTh", "age", "menostat", "tsize", "tgrade", "pnodes", "progrec", "estrec", "time_days", "event")
FEATURE_NAMES = ("horTh", "age", "menostat", "log_tsize", "grade_2", "grade_3", "log_pnodes", "log_progrec", "log_estrec")
CELLS = [(t, s) for t in range(INTERVALS) for s in range(RISK_BINS)]


def features(record: dict) -> list[float]:
    grade = int(record["tgrade"])
    return [record["horTh"], (record["age"] - 50.0) / 10.0, record["menostat"],
            math.log(record["tsize"]) - math.log(25.0), float(grade == 2), float(grade == 3),
            math.log1p(record["pnodes"]) - math.log(4.0), math.log1p(record["progrec"]) - math.log(40.0),
            math.log1p(record["estrec"]) - math.log(40.0)]


class HazardModel(torch.nn.Module):
    """logit h_k(x) = baseline_k + risk(x): two linear layers, so Opacus computes per-patient gradients."""

    def __init__(self):
        super().__init__()
        self.risk = torch.nn.Linear(len(FEATURE_NAMES), 1, bias=False)
        self.baseline = torch.nn.Linear(1, INTERVALS)

    @property
    def weight(self) -> torch.nn.Parameter:  # the risk coefficients (what the sensitivity check perturbs)
        return self.risk.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.risk(x) + self.baseline(torch.ones(len(x), 1, dtype=x.dtype, device=x.device))


def interval_of(time_days: float) -> int:
    return min(int(time_days // INTERVAL_DAYS), INTERVALS - 1)


def person_period_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each patient's negative log-likelihood (shape: patients) from hazard logits (patients, INTERVALS) and
    labels (patients, 2): the interval of their last follow-up and whether the event was observed."""
    interval, event = labels[:, 0].long(), labels[:, 1]
    years = torch.arange(logits.shape[1], device=logits.device)
    lived = (years[None, :] < interval[:, None]).float()
    survived = (torch.nn.functional.softplus(logits) * lived).sum(dim=1)  # -log(1 - h) = softplus(logit)
    failed = torch.nn.functional.softplus(-logits.gather(1, interval[:, None]).squeeze(1))  # -log h
    return survived + event * failed


def event_risk(logits: torch.Tensor, *, years: int = RISK_HORIZON_YEARS) -> torch.Tensor:
    """Predicted probability of the event within `years`."""
    return 1.0 - torch.prod(1.0 - torch.sigmoid(logits[:, :years]), dim=1)


class BreastCancerSurvivalTask(FederatedTask):
    task_id = "breast-cancer-survival/v1"
    purpose = "HRESCH"
    record_kind = "breast-cancer"
    fields = FIELDS
    headline = Metric("c_index", "Concordance index", decimals=3, low=0.0, high=1.0, chance=0.5,
                      pooling="pooled test set, from counts by follow-up year and risk fifth",
                      description="share of comparable patient pairs whose predicted 5-year risks are in the order "
                                  "of their recurrences (Harrell's C)")
    report_keys = ("c_index", "c_index_error_bound", "loss")
    evaluation_reads_training_data = False  # declared scales: nothing fitted on training patients
    description = ("predicting the risk of breast cancer recurrence or death after surgery from tumour and treatment "
                   "characteristics")
    data_read = ("your age and menopausal status, your tumour's size and grade, the number of lymph nodes with cancer, "
                 "your progesterone and oestrogen receptor levels, whether you had hormonal therapy, and how long after "
                 "surgery the cancer came back (or how long you have been followed without it)")
    data_categories = {"demographics": 0, "laboratory": 2, "diagnoses": 3, "medications": 6, "oncology": 8,
                       "outcomes": 9}
    readers = (RecordReader("csv", is_gbsg2_csv, read_gbsg2_csv),)
    aggregation_weight = "events"
    evaluation_partitions = (tuple((f"at-risk/{t}/{s}",) for t, s in CELLS),
                             tuple((f"events/{t}/{s}",) for t, s in CELLS))

    @property
    def demo_data(self) -> DemoData:
        from federation.tasks.breast_cancer_survival import demo

        return DemoData(hospitals={name: f"{name}.csv" for name in demo.HOSPITALS}, write=demo.write_demo_data)

    def build_model(self) -> torch.nn.Module:
        return HazardModel()

    def is_complete(self, record: dict) -> bool:
        return all(isinstance(record.get(f), (int, float)) and math.isfinite(record[f]) for f in FIELDS)

    def examples(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        x = np.array([features(r) for r in records], np.float32).reshape(-1, len(FEATURE_NAMES))
        y = np.array([[interval_of(r["time_days"]), r["event"]] for r in records], np.float32).reshape(-1, 2)
        return x, y

    def normaliser(self, train_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(len(FEATURE_NAMES), np.float32), np.ones(len(FEATURE_NAMES), np.float32)

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return person_period_nll(outputs, labels).mean()

    def training_weight(self, records: list[dict]) -> int:
        return int(sum(r["event"] for r in records))  # a patient adds at most one event

    def split_cohorts(self, clinicals: list[dict], cohort: str | None = None) -> list[str]:
        """`cohort` if given; else a third of the complete records `test`, by default_rng(43) in file order."""
        complete = [i for i, c in enumerate(clinicals) if self.is_complete(c)]
        cohorts = ["incomplete"] * len(clinicals)
        for i in complete:
            cohorts[i] = cohort or "train"
        if cohort is None and len(complete) >= 2:
            for i in np.random.default_rng(SPLIT_SEED).permutation(complete)[:max(1, round(len(complete) * TEST_FRACTION))]:
                cohorts[int(i)] = "test"
        return cohorts

    @property
    def evaluation_bounds(self) -> dict[str, float]:
        cells = {f"{kind}/{t}/{s}": 1.0 for kind in ("at-risk", "events") for t, s in CELLS}
        return {"examples": 1.0, "events": 1.0, "loss-sum": LOSS_CLIP, **cells}

    @torch.no_grad()
    def evaluation_sums(self, model, features, labels):
        model.eval()
        logits = model(torch.from_numpy(features))
        labels_t = torch.from_numpy(labels).reshape(-1, 2)
        nll = person_period_nll(logits, labels_t).clamp(max=LOSS_CLIP)
        risk_bin = (event_risk(logits) * RISK_BINS).long().clamp(0, RISK_BINS - 1)
        sums = dict.fromkeys(self.evaluation_bounds, 0.0)
        sums.update({"examples": float(len(labels_t)), "events": float(labels_t[:, 1].sum()),
                     "loss-sum": float(nll.sum())})
        for (interval, event), s in zip(labels_t.tolist(), risk_bin.tolist()):
            sums[f"at-risk/{int(interval)}/{s}"] += 1.0
            sums[f"events/{int(interval)}/{s}"] += float(event)
        return sums

    def summarise(self, sums):
        n = sums.get("examples", 0)
        if not n or n < 1:
            return {}
        events = np.array([[sums[f"events/{t}/{s}"] for s in range(RISK_BINS)] for t in range(INTERVALS)])
        at_risk = np.array([[sums[f"at-risk/{t}/{s}"] for s in range(RISK_BINS)] for t in range(INTERVALS)])
        c_index, bound = binned_concordance(events, at_risk)
        return {"c_index": c_index, "c_index_error_bound": bound, "loss": max(sums["loss-sum"], 0.0) / n,
                "events": max(sums["events"], 0.0), "examples": n}
