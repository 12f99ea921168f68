"""Glucose forecasting for type 1 diabetes: CGM 30 minutes ahead from the last hour of CGM, recent carbohydrate
and recent insulin ("glucose-forecast/v1").

Records (what the consent gate passes on, fields below; node/twins/records.py writes them): a patient's
minute grid from `start` for `minutes` minutes, with sparse series of [minute, value] pairs: CGM readings
(mg/dL), carbohydrate eaten (g), insulin boluses (U) and basal rate changes (U/h, in effect until the next).

Example at minute t (every 5 minutes where the data allow):
- features (26): CGM at t as (g - 140) / 50; CGM changes g(t) - g(t - 5k) for k = 1..12 (the last hour) / 20;
  carbohydrate eaten and bolus insulin in the bins 0-15, 15-30, 30-60, 60-90, 90-120, 120-180 minutes ago
  (/ 50 g, / 5 U); basal rate at t (/ 1 U/h). The scales are fixed, not fitted: evaluation reads no
  training patient.
- label: the CGM change to t + 30 min (/ 20 mg/dL). CGM between readings is linear, across gaps of at
  most 15 min; a window with any needed value missing is skipped.

Model: a linear autoregressive model with exogenous inputs (ARX) on those features, zero-initialised, so
that the untrained model is exactly "last value carried forward", the baseline every round also reports.
Loss: mean squared error. Metric: RMSE in mg/dL of the 30-minute forecast over all test windows.

**The unit of privacy is the patient.** One patient contributes many windows, so DP-SGD over windows
would protect a window, not a patient. Here a training example is one patient: `training_examples`
returns, for each patient, a fixed number of windows (WINDOWS_PER_PATIENT, evenly spread over the
patient's days) as one row of shape (windows, features). Opacus samples patients (Poisson), computes one
gradient per patient (the mean over that patient's windows), clips it to max-grad-norm and adds noise;
the accountant's sample rate counts patients. So the node's epsilon is a patient-level guarantee: for any
one patient, adding or removing all of their data changes the output distribution by at most (epsilon,
delta) over the whole study.

**Subgroups.** The headline metric is also reported per age group (`age_years` of the record, the age at its
start): child under 13, adolescent 13-19, adult 20 and over, the groups of the UVA/Padova simulator's virtual
cohorts (their published ages, node/twins/data/uva-padova/Quest.csv: children 7-12, adolescents 14-19, adults
26-68). A record without an age is in no group; the age is read for grouping only, never as a feature.

Federated across hospitals' virtual patients: benchmarks/twin_federation.py (`federated_forecaster_rmse_30min_mgdl`,
which the twin benchmark calls; federation/ may not import the node or the coordinator, so it lives there).

Purpose code HRESCH (health research): training a forecaster across hospitals is research on pooled
patients' data, as the heart-disease study is; using a finished model in one patient's care would be a
separate decision under that patient's own treatment purpose (TREAT), not a reason to pool others' data.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import torch

from federation.tasks.base import FederatedTask, Metric
from federation.tasks.data_path import RecordReader, Subgroup

# Fields of a diabetes record (node/twins/records.py DiabetesRecord.to_clinical writes exactly these).
RECORD_FIELDS = ("start", "minutes", "cgm_mgdl", "carbs_g", "bolus_u", "basal_u_per_h")

STEP_MIN = 5
HISTORY_MIN = 60
HORIZON_MIN = 30
MAX_GAP_MIN = 15  # CGM is interpolated across gaps up to this long
BINS_MIN = (0, 15, 30, 60, 90, 120, 180)  # carbohydrate and bolus sums in [a, b) minutes before t
FIRST_MIN = BINS_MIN[-1]  # the first minute with a full input history
WINDOWS_PER_PATIENT = 96
ERROR_CLIP_MGDL = 150.0  # a window's 30-min forecast error counts at most this much in the evaluation sums
GLUCOSE_CENTRE_MGDL, GLUCOSE_SCALE_MGDL = 140.0, 50.0
CHANGE_SCALE_MGDL = 20.0
CARBS_SCALE_G, BOLUS_SCALE_U, BASAL_SCALE_U_PER_H = 50.0, 5.0, 1.0
TEST_FRACTION, SPLIT_SEED = 1 / 3, 43  # the cohort split of a file read without a cohort
AGE_GROUPS = ("child", "adolescent", "adult")  # under 13, 13-19, 20 and over (years; the module docstring)
ADOLESCENT_FROM_YEARS, ADULT_FROM_YEARS = 13, 20
N_FEATURES = 1 + HISTORY_MIN // STEP_MIN + 2 * (len(BINS_MIN) - 1) + 1


def series_to_grid(pairs, minutes: int, *, fill: str) -> np.ndarray:
    """A per-minute array from [minute, value] pairs: fill "nan" (readings), "sum" (events) or "hold" (rates)."""
    pairs = np.asarray(pairs if pairs is not None and len(pairs) else np.zeros((0, 2)), dtype=float).reshape(-1, 2)
    at, values = pairs[:, 0].astype(int), pairs[:, 1]
    if len(at) and (at.min() < 0 or at.max() >= minutes):
        raise ValueError(f"a minute is outside the record's {minutes} minutes")
    if fill == "nan":
        grid = np.full(minutes, np.nan)
        grid[at] = values
    elif fill == "sum":
        grid = np.zeros(minutes)
        np.add.at(grid, at, values)
    else:  # hold: a rate stays until the next change; 0 before the first
        grid = np.zeros(minutes)
        order = np.argsort(at, kind="stable")
        for start, value in zip(at[order], values[order]):
            grid[start:] = value
    return grid


def decode(record: dict) -> dict[str, np.ndarray]:
    minutes = int(record["minutes"])
    return {
        "cgm_mgdl": series_to_grid(record["cgm_mgdl"], minutes, fill="nan"),
        "carbs_g": series_to_grid(record["carbs_g"], minutes, fill="sum"),
        "bolus_u": series_to_grid(record["bolus_u"], minutes, fill="sum"),
        "basal_u_per_h": series_to_grid(record["basal_u_per_h"], minutes, fill="hold"),
    }


def interpolate_cgm(cgm_mgdl: np.ndarray, *, max_gap_min: int = MAX_GAP_MIN) -> np.ndarray:
    """Linear interpolation between readings no more than max_gap_min apart; NaN elsewhere."""
    minutes = len(cgm_mgdl)
    known = np.flatnonzero(np.isfinite(cgm_mgdl))
    out = np.full(minutes, np.nan)
    if len(known) == 0:
        return out
    out[known] = cgm_mgdl[known]
    if len(known) > 1:
        gaps = np.diff(known)
        for (a, b) in zip(known[:-1][(gaps > 1) & (gaps <= max_gap_min)], known[1:][(gaps > 1) & (gaps <= max_gap_min)]):
            out[a : b + 1] = np.interp(np.arange(a, b + 1), [a, b], [cgm_mgdl[a], cgm_mgdl[b]])
    return out


def windows(series: dict[str, np.ndarray], *, horizon_min: int = HORIZON_MIN, with_target: bool = True):
    """Every complete window of one patient, every STEP_MIN minutes: (features, labels, current CGM mg/dL,
    minute t of each window). with_target=False keeps windows whose target is not (yet) known; labels NaN."""
    cgm = interpolate_cgm(series["cgm_mgdl"])
    minutes = len(cgm)
    times = np.arange(FIRST_MIN, minutes - horizon_min if with_target else minutes, STEP_MIN)
    if len(times) == 0:
        return np.zeros((0, N_FEATURES), np.float32), np.zeros(0, np.float32), np.zeros(0), np.zeros(0, int)
    lags = np.arange(0, HISTORY_MIN + 1, STEP_MIN)
    history = cgm[times[:, None] - lags[None, :]]  # (windows, 13): g(t), g(t-5), ..., g(t-60)
    target = cgm[times + horizon_min] if with_target else np.full(len(times), np.nan)
    ok = np.isfinite(history).all(axis=1) & (np.isfinite(target) if with_target else True)
    times, history, target = times[ok], history[ok], target[ok]
    cumulative = {k: np.concatenate([[0.0], np.cumsum(series[k])]) for k in ("carbs_g", "bolus_u")}

    def binned(key: str, scale: float) -> np.ndarray:
        c = cumulative[key]  # minutes m with t - m in [a, b): c[t + 1 - a] - c[t + 1 - b]
        return np.stack([c[times + 1 - a] - c[times + 1 - b] for a, b in zip(BINS_MIN[:-1], BINS_MIN[1:])], axis=1) / scale

    features = np.concatenate(
        [
            (history[:, :1] - GLUCOSE_CENTRE_MGDL) / GLUCOSE_SCALE_MGDL,
            (history[:, :1] - history[:, 1:]) / CHANGE_SCALE_MGDL,
            binned("carbs_g", CARBS_SCALE_G),
            binned("bolus_u", BOLUS_SCALE_U),
            series["basal_u_per_h"][times][:, None] / BASAL_SCALE_U_PER_H,
        ],
        axis=1,
    ).astype(np.float32)
    labels = ((target - history[:, 0]) / CHANGE_SCALE_MGDL).astype(np.float32)
    return features, labels, history[:, 0], times


@torch.no_grad()
def forecast_mgdl(model: torch.nn.Module, series: dict[str, np.ndarray], *, horizon_min: int = HORIZON_MIN):
    """A trained forecaster's forecasts for one patient's per-minute series (as `decode` gives them, or a
    DiabetesRecord's arrays): (minute t, forecast of CGM at t + horizon_min in mg/dL) for every window
    whose last hour of CGM is known, up to the last minute."""
    features, _, current, times = windows(series, horizon_min=horizon_min, with_target=False)
    model.eval()
    change = model(torch.from_numpy(features)).reshape(-1).double().numpy() * CHANGE_SCALE_MGDL
    return times, current + change


def age_group(age_years) -> str | None:
    """The age group of an age in years at the record's start; None when the age is unknown or not an age."""
    if not isinstance(age_years, (int, float)) or isinstance(age_years, bool) or not 0 <= age_years <= 120:
        return None  # NaN fails the comparison too
    return "child" if age_years < ADOLESCENT_FROM_YEARS else "adolescent" if age_years < ADULT_FROM_YEARS else "adult"


def _is_pairs(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in p)
        for p in value
    )


class GlucoseForecastTask(FederatedTask):
    task_id = "glucose-forecast/v1"
    purpose = "HRESCH"
    record_kind = "diabetes"
    fields = RECORD_FIELDS + ("age_years",)  # the age only places the patient in an age group
    headline = Metric("rmse_30min_mgdl", "30-min forecast RMSE", unit="mg/dL", higher_is_better=False, low=0.0,
                      description="root mean squared error of the 30-min forecast over every hospital's test windows")
    evaluation_reads_training_data = False  # fixed feature scales: nothing is fitted on training patients
    evaluation_count_key = "windows"
    horizon_min = HORIZON_MIN
    windows_per_patient = WINDOWS_PER_PATIENT
    description = ("forecasting blood glucose 30 minutes ahead from continuous glucose monitor readings, meals and "
                   "insulin doses")
    data_read = ("your continuous glucose monitor readings, the carbohydrates you ate and the insulin you took (bolus "
                 "doses and basal rates), with their times, and your age (to report how well the forecast serves "
                 "children, adolescents and adults)")
    data_categories = {"demographics": 0, "glucose": 7, "medications": 6}
    subgroups = (Subgroup("age group", AGE_GROUPS, lambda r: age_group(r.get("age_years"))),)
    # Its records are the node's twins (node/twins/records.py); both readers need the node's record builder.
    readers = (
        RecordReader("fhir", "node.records.builtin_readers:is_twin_fhir", "node.records.builtin_readers:read_twin_fhir"),
        RecordReader("csv", "node.records.twin_csv:is_twin_csv", "node.records.builtin_readers:read_twin_csv"),
    )
    # No demo files: `twinledger twin cohort` writes a cohort's CSV (node/twins/cohort.py).

    def split_cohorts(self, clinicals: list[dict], cohort: str | None = None) -> list[str]:
        """`cohort` for every usable record if given; otherwise a third of the usable records (at least one when
        there are two or more) are `test`, chosen by a random permutation seeded 43 (FLamby's split seed) in file
        order. A record with no complete forecasting window is `incomplete`."""
        usable = [i for i, clinical in enumerate(clinicals) if self.is_complete(clinical)]
        cohorts = ["incomplete"] * len(clinicals)
        for i in usable:
            cohorts[i] = cohort or "train"
        if cohort is None and len(usable) >= 2:
            n_test = max(1, round(len(usable) * TEST_FRACTION))
            for i in np.random.default_rng(SPLIT_SEED).permutation(usable)[:n_test]:
                cohorts[int(i)] = "test"
        return cohorts

    def build_model(self) -> torch.nn.Module:
        model = torch.nn.Linear(N_FEATURES, 1)
        torch.nn.init.zeros_(model.weight)  # the untrained model forecasts "no change": last value carried forward
        torch.nn.init.zeros_(model.bias)
        return model

    def is_complete(self, record: dict) -> bool:
        try:
            if not isinstance(record.get("minutes"), int) or not all(_is_pairs(record.get(k)) for k in RECORD_FIELDS[2:]):
                return False
            datetime.fromisoformat(str(record["start"]))
            return len(windows(decode(record), horizon_min=self.horizon_min)[1]) > 0
        except (TypeError, ValueError, IndexError):
            return False

    def examples(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        return self.evaluation_examples(records)

    def training_examples(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """(patients, WINDOWS_PER_PATIENT, features) and (patients, WINDOWS_PER_PATIENT): one row per patient."""
        features, labels = [], []
        for record in records:
            x, y, _, _ = windows(decode(record), horizon_min=self.horizon_min)
            pick = np.linspace(0, len(y) - 1, self.windows_per_patient).round().astype(int)
            features.append(x[pick])
            labels.append(y[pick])
        if not records:
            return np.zeros((0, self.windows_per_patient, N_FEATURES), np.float32), np.zeros((0, self.windows_per_patient), np.float32)
        return np.stack(features), np.stack(labels)

    def evaluation_examples(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Every window of every patient, flattened: (windows, features) and (windows,)."""
        parts = [windows(decode(r), horizon_min=self.horizon_min)[:2] for r in records]
        if not parts:
            return np.zeros((0, N_FEATURES), np.float32), np.zeros(0, np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def normaliser(self, train_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(N_FEATURES, np.float32), np.ones(N_FEATURES, np.float32)

    @property
    def evaluation_bounds(self):
        # One patient adds at most WINDOWS_PER_PATIENT windows (patient_evaluation_examples), each error clipped.
        windows = float(self.windows_per_patient)
        return {"windows": windows, "sse-mgdl2": windows * ERROR_CLIP_MGDL**2,
                "sse-lvcf-mgdl2": windows * ERROR_CLIP_MGDL**2,
                "loss-sum": windows * (ERROR_CLIP_MGDL / CHANGE_SCALE_MGDL) ** 2}

    def patient_evaluation_examples(self, record: dict) -> tuple[np.ndarray, np.ndarray]:
        """At most WINDOWS_PER_PATIENT of the patient's windows, evenly spread: a patient's weight is bounded."""
        x, y = self.evaluation_examples([record])
        if len(y) > self.windows_per_patient:
            pick = np.linspace(0, len(y) - 1, self.windows_per_patient).round().astype(int)
            x, y = x[pick], y[pick]
        return x, y

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(outputs.reshape(-1), labels.reshape(-1))

    @torch.no_grad()
    def evaluation_sums(self, model, features, labels):
        model.eval()
        predicted = model(torch.from_numpy(features)).reshape(-1).double().numpy()
        truth = labels.reshape(-1).astype(np.float64)
        error_mgdl = np.clip((predicted - truth) * CHANGE_SCALE_MGDL, -ERROR_CLIP_MGDL, ERROR_CLIP_MGDL)
        lvcf_mgdl = np.clip(truth * CHANGE_SCALE_MGDL, -ERROR_CLIP_MGDL, ERROR_CLIP_MGDL)
        return {
            "windows": int(len(truth)),
            "sse-mgdl2": float(np.sum(error_mgdl**2)),
            "sse-lvcf-mgdl2": float(np.sum(lvcf_mgdl**2)),  # last value carried forward
            "loss-sum": float(np.sum((error_mgdl / CHANGE_SCALE_MGDL) ** 2)),
        }

    def summarise(self, sums):
        # Sums may be noisy (differential privacy): negative ones count as zero.
        n = sums.get("windows", 0)
        if not n or n < 1:
            return {}
        return {
            "rmse_30min_mgdl": math.sqrt(max(sums["sse-mgdl2"], 0.0) / n),
            "rmse_30min_lvcf_mgdl": math.sqrt(max(sums["sse-lvcf-mgdl2"], 0.0) / n),
            "loss": max(sums["loss-sum"], 0.0) / n,
            "windows": n,
        }
