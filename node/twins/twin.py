"""A patient's calibrated twin and what calibration starts from (node/twins/calibration.py fits it): the
population prior over the fitted parameters, the therapy read from the record, the record's inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from node.twins.parameters import (
    MODEL_PARAMETERS, PARAMETER_UNITS, PMOL_PER_U, Cohort, PatientParameters, load_patient, patient_names,
)
from node.twins.records import DiabetesRecord
from node.twins.uva_padova import DEFAULT_EATING_RATE_G_PER_MIN, eat_meals
from node.twins.steady_state import steady_state

DAY_MIN = 24 * 60
# What three days of CGM, meals and insulin identify (Fisher information, node/twins/identifiability.py: Gb,
# kmin, kp3, ki, kmax, k1 and f; f is 0.9 in all 30 published patients, so the prior fixes it) plus Vmx, the
# peripheral insulin sensitivity, which alone trades off against f and Gb but without it the others absorb
# its mismatch (on 10 virtual patients every parameter then beat the prior; docs/twins.md).
FITTED = ("Gb", "kmin", "kp3", "ki", "kmax", "k1", "Vmx")
PRIOR_SHRINKAGE = 0.2
NEAREST_BY_WEIGHT = None  # all patients: on the 30, the 12 nearest in weight gave a worse fit (docs/twins.md)


class CalibrationError(ValueError):
    """The record cannot be calibrated (too short, no CGM, no insulin ...): a clear message for the user."""


@dataclass(frozen=True)
class PopulationPrior:
    fitted: tuple[str, ...]
    mean_log: np.ndarray  # (d,)
    cov_log: np.ndarray  # (d, d)
    base_values: dict  # population medians of every model parameter
    population: tuple[str, ...]
    members: tuple = ()  # the population's full parameter sets, in the order of `population`

    @classmethod
    def from_patients(cls, names=None, *, exclude=(), fitted=FITTED, body_weight_kg: float | None = None,
                      nearest: int | None = NEAREST_BY_WEIGHT) -> "PopulationPrior":
        """From the named patients (default all 30) less `exclude`; with a body weight and `nearest`, from the
        `nearest` of them in log body weight only."""
        names = [n for n in (names or patient_names()) if n not in set(exclude)]
        if body_weight_kg is not None and nearest and nearest < len(names):
            gap = {n: abs(math.log(load_patient(n).body_weight_kg / body_weight_kg)) for n in names}
            names = sorted(names, key=gap.__getitem__)[:nearest]
        if len(names) < len(fitted) + 2:
            raise ValueError("the prior needs more patients than fitted parameters")
        values = [load_patient(n).values for n in names]
        logs = np.log([[v[s] for s in fitted] for v in values])
        cov = np.cov(logs, rowvar=False)
        cov = (1 - PRIOR_SHRINKAGE) * cov + PRIOR_SHRINKAGE * np.diag(np.diag(cov))
        base = {s: float(np.median([v[s] for v in values])) for s in MODEL_PARAMETERS}
        return cls(tuple(fitted), logs.mean(axis=0), cov, base, tuple(names), tuple(values))

    @property
    def cholesky(self) -> np.ndarray:
        return np.linalg.cholesky(self.cov_log)


@dataclass(frozen=True)
class Therapy:
    """The patient's current treatment as read from their record."""

    basal_u_per_h: float
    carb_ratio_g_per_u: float
    correction_factor_mgdl_per_u: float
    body_weight_kg: float


def infer_therapy(record: DiabetesRecord, *, body_weight_kg: float | None = None) -> Therapy:
    basal = float(np.median(record.basal_u_per_h))
    carbs, bolus = float(record.carbs_g.sum()), float(record.bolus_u.sum())
    carb_ratio = carbs / bolus if bolus > 0 and carbs > 0 else 10.0
    weight = body_weight_kg or record.body_weight_kg
    if not weight:
        raise CalibrationError("the record has no body weight (kg): the model's volumes are per kg")
    total_daily_u = basal * 24 + bolus * 1440 / max(record.minutes, 1)
    # The 1800 rule (mg/dL per U = 1800 / total daily insulin) when no correction factor is recorded.
    return Therapy(basal_u_per_h=basal, carb_ratio_g_per_u=carb_ratio,
                   correction_factor_mgdl_per_u=1800.0 / max(total_daily_u, 1.0), body_weight_kg=float(weight))


def check_record(record: DiabetesRecord, *, min_minutes: int = 12 * 60) -> None:
    if record.minutes < min_minutes:
        raise CalibrationError(f"the record covers {record.minutes} min; calibration needs at least {min_minutes} min")
    readings = np.isfinite(record.cgm_mgdl).sum()
    if readings < min_minutes / 15:
        raise CalibrationError(f"the record has {readings} CGM readings; calibration needs at least {min_minutes // 15}")
    for name in ("carbs_g", "bolus_u", "basal_u_per_h"):
        values = np.asarray(getattr(record, name), dtype=float)
        if not np.isfinite(values).all() or (values < 0).any():
            raise CalibrationError(f"{name} must be finite and non-negative at every minute")
    if not (np.asarray(record.basal_u_per_h) > 0).any():
        raise CalibrationError("the record has no basal insulin: the twin needs the patient's basal rate")


def spread_meals(carbs_g: np.ndarray, eating_rate_g_per_min=None) -> np.ndarray:
    """Carbohydrate per minute from carbs recorded at a meal's first minute, each meal eaten at its own
    eating rate (g/min, per minute like carbs_g; unknown: DEFAULT_EATING_RATE_G_PER_MIN)."""
    return eat_meals(carbs_g, eating_rate_g_per_min)


def record_inputs(record: DiabetesRecord) -> tuple[np.ndarray, np.ndarray]:
    """(carbs_g_per_min, insulin_u_per_min) of a record, each (minutes,)."""
    carbs = spread_meals(record.carbs_g, record.eating_rate_g_per_min)[0]
    insulin = np.asarray(record.bolus_u, dtype=float) + np.asarray(record.basal_u_per_h, dtype=float) / 60.0
    return carbs, insulin


@dataclass
class CalibratedTwin:
    patient_id: str
    prior: PopulationPrior
    therapy: Therapy
    map_log: np.ndarray  # (d,) log of the fitted parameters at the MAP
    cov_log: np.ndarray  # (d, d) Laplace posterior covariance of log(theta)
    residual_sd_mgdl: float
    residual_autocorrelation: float
    iterations: int
    converged: bool
    calibrated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    calibration_minutes: int = 0
    reference_patient: str = ""  # the population patient whose other parameters the twin shares
    reference_values: dict | None = None


    @property
    def fitted(self) -> tuple[str, ...]:
        return self.prior.fitted

    def values(self, theta_log) -> dict:
        """A full, steady-state-consistent parameter set for fitted log-parameters theta_log."""
        base = dict(self.reference_values or self.prior.base_values)
        base["BW"] = self.therapy.body_weight_kg
        base["u2ss"] = self.therapy.basal_u_per_h / 60.0 * PMOL_PER_U / self.therapy.body_weight_kg
        for symbol, value in zip(self.fitted, np.exp(np.asarray(theta_log, dtype=float))):
            base[symbol] = float(value)
        return steady_state(base)[0]

    def patients(self, theta_logs, name: str | None = None) -> list[PatientParameters]:
        return [_patient(self.values(t), name or self.patient_id, self.therapy) for t in np.atleast_2d(theta_logs)]

    def with_reference(self, values: dict, name: str) -> "CalibratedTwin":
        import dataclasses

        return dataclasses.replace(self, reference_values=dict(values), reference_patient=name)

    def cohort(self, theta_logs) -> Cohort:
        return Cohort.of(self.patients(theta_logs))

    def ensemble_log(self, members: int = 32, *, seed: int = 0) -> np.ndarray:
        """The MAP followed by members - 1 draws from the Laplace posterior, (members, d)."""
        rng = np.random.default_rng(seed)
        draws = rng.multivariate_normal(self.map_log, self.cov_log, size=max(members - 1, 0))
        return np.vstack([self.map_log[None, :], draws])

    def parameter_table(self) -> list[dict]:
        sd = np.sqrt(np.diag(self.cov_log))
        rows = []
        for i, symbol in enumerate(self.fitted):
            rows.append({
                "symbol": symbol,
                "unit": PARAMETER_UNITS[symbol],
                "map": float(np.exp(self.map_log[i])),
                "low_95": float(np.exp(self.map_log[i] - 1.96 * sd[i])),
                "high_95": float(np.exp(self.map_log[i] + 1.96 * sd[i])),
                "posterior_sd_log": float(sd[i]),
                "prior_median": float(np.exp(self.prior.mean_log[i])),
                "prior_sd_log": float(np.sqrt(self.prior.cov_log[i, i])),
            })
        return rows


def _patient(values: dict, name: str, therapy: Therapy) -> PatientParameters:
    values, states = steady_state(values)
    return PatientParameters(name=name, values=values, initial_states=states,
                             carb_ratio_g_per_u=therapy.carb_ratio_g_per_u,
                             correction_factor_mgdl_per_u=therapy.correction_factor_mgdl_per_u,
                             age_years=float("nan"), total_daily_insulin_u=float("nan"))
