"""What-if: compare treatment plans for one calibrated patient, with bands from the calibration ensemble.

Every plan is simulated for every ensemble member (the MAP and draws from the Laplace posterior) in one
batch, from the patient's current state (the end of their record, estimated as for a forecast) over the
same day of meals ("a day like their last one" unless meals are given). At each meal the plan's bolus is
carbs / CR, plus, when the plan corrects, (CGM - target) / CF if the twin's CGM is above target (the
sensor glucose the patient would see, without noise). Outcomes per plan: the glycemia metrics' median and
5th-95th percentiles over the ensemble.

Note: with corrections on, more insulin earlier can mean a smaller correction later (the feedback a real
patient has too), so "more insulin never raises glucose" holds pointwise only for plans without corrections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from node.twins.forecast import estimate_states
from node.twins.glycemia import ALL_METRIC_NAMES, metrics_rows
from node.twins.records import DiabetesRecord
from node.twins.twin import DAY_MIN, CalibratedTwin, spread_meals
from node.twins.uva_padova import Cohort, Scenario, simulate

MAX_PLANS = 8


@dataclass(frozen=True)
class TreatmentPlan:
    """A plan; None means "as the patient is treated now" (their record's basal, CR and CF)."""

    name: str
    basal_u_per_h: float | None = None
    carb_ratio_g_per_u: float | None = None
    correction_factor_mgdl_per_u: float | None = None
    target_glucose_mgdl: float = 120.0
    correct_at_meals: bool = True
    extra_boluses: tuple = ()  # (time_min, units_u)
    extra_meals: tuple = ()  # (time_min, carbs_g), eaten without a bolus unless one is in extra_boluses

    def check(self, horizon_min: int) -> None:
        for label, value in (("basal_u_per_h", self.basal_u_per_h), ("carb_ratio_g_per_u", self.carb_ratio_g_per_u),
                             ("correction_factor_mgdl_per_u", self.correction_factor_mgdl_per_u)):
            if value is not None and not (np.isfinite(value) and value >= (0 if label == "basal_u_per_h" else 1e-3)):
                raise ValueError(f"plan {self.name!r}: {label} must be a positive number")
        if self.basal_u_per_h is not None and self.basal_u_per_h > 10:
            raise ValueError(f"plan {self.name!r}: basal_u_per_h above 10 U/h is not a plan a twin should try")
        if not 70 <= self.target_glucose_mgdl <= 250:
            raise ValueError(f"plan {self.name!r}: target_glucose_mgdl must lie in 70-250")
        for time_min, units_u in self.extra_boluses:
            if not (0 <= time_min < horizon_min and 0 <= units_u <= 30):
                raise ValueError(f"plan {self.name!r}: a bolus needs 0 <= time_min < {horizon_min} and 0-30 U")
        for time_min, carbs_g in self.extra_meals:
            if not (0 <= time_min < horizon_min and 0 <= carbs_g <= 300):
                raise ValueError(f"plan {self.name!r}: a meal needs 0 <= time_min < {horizon_min} and 0-300 g")


def typical_day_meals(record: DiabetesRecord, horizon_min: int = DAY_MIN) -> list[tuple[int, float]]:
    """The meals of the record's last `horizon_min`, moved to start at minute 0 ("a day like the last one")."""
    first = max(0, record.minutes - horizon_min)
    carbs = np.asarray(record.carbs_g[first:], dtype=float)
    return [(int(m), float(carbs[m])) for m in np.flatnonzero(carbs > 0)]


@dataclass
class PlanOutcome:
    plan: TreatmentPlan
    glucose_mgdl: np.ndarray  # (members, horizon + 1) CGM glucose
    bolus_u: np.ndarray  # (members, horizon) boluses given
    median: dict = field(default_factory=dict)
    low: dict = field(default_factory=dict)  # 5th percentile over the ensemble
    high: dict = field(default_factory=dict)  # 95th


@dataclass
class WhatIfResult:
    patient_id: str
    time_min: np.ndarray
    meals: list
    outcomes: list[PlanOutcome]
    members: int


def run_whatif(twin: CalibratedTwin, record: DiabetesRecord, plans: list[TreatmentPlan], *,
               meals: list[tuple[int, float]] | None = None, horizon_min: int = DAY_MIN, members: int = 16,
               seed: int = 0, from_steady_state: bool = False) -> WhatIfResult:
    """Simulate each plan for each ensemble member over `horizon_min` from the current state."""
    if not plans or len(plans) > MAX_PLANS:
        raise ValueError(f"give 1 to {MAX_PLANS} plans")
    if len({p.name for p in plans}) != len(plans):
        raise ValueError("plan names must be distinct")
    if not 60 <= horizon_min <= 3 * DAY_MIN:
        raise ValueError("horizon_min must lie in 60-4320")
    for plan in plans:
        plan.check(horizon_min)
    meals = typical_day_meals(record, horizon_min) if meals is None else [(int(t), float(g)) for t, g in meals]
    for time_min, carbs_g in meals:
        if not (0 <= time_min < horizon_min and 0 <= carbs_g <= 300):
            raise ValueError(f"a meal needs 0 <= time_min < {horizon_min} and 0-300 g")
    thetas = twin.ensemble_log(members, seed=seed)
    n = len(thetas)
    if from_steady_state:
        cohort = twin.cohort(thetas)
        start_states = np.stack([p.initial_states for p in cohort.patients])
        start_dose = np.zeros(n)
    else:
        estimate = estimate_states(twin, record, at_minutes=[record.minutes], theta_logs=thetas)
        cohort, start_states, start_dose = estimate.cohort, estimate.states[0], estimate.meal_dose_mg[0]
    therapy = twin.therapy
    rows = len(plans) * n
    big = Cohort.of(list(cohort.patients) * len(plans))
    carbs_at = np.zeros((rows, horizon_min))  # g at a meal's first minute
    boluses = np.zeros((rows, horizon_min))
    basal = np.zeros(rows)
    meal_bolus_at: dict[int, list[tuple[int, float]]] = {}  # minute -> (row, carbs to cover)
    ratio = np.zeros(rows)
    factor = np.zeros(rows)
    target = np.zeros(rows)
    correct = np.zeros(rows, dtype=bool)
    for k, plan in enumerate(plans):
        block = slice(k * n, (k + 1) * n)
        basal[block] = therapy.basal_u_per_h if plan.basal_u_per_h is None else plan.basal_u_per_h
        ratio[block] = plan.carb_ratio_g_per_u or therapy.carb_ratio_g_per_u
        factor[block] = plan.correction_factor_mgdl_per_u or therapy.correction_factor_mgdl_per_u
        target[block] = plan.target_glucose_mgdl
        correct[block] = plan.correct_at_meals
        for time_min, carbs_g in meals:
            carbs_at[block, time_min] += carbs_g
            for row in range(k * n, (k + 1) * n):
                meal_bolus_at.setdefault(time_min, []).append((row, carbs_g))
        for time_min, carbs_g in plan.extra_meals:
            carbs_at[block, int(time_min)] += carbs_g
        for time_min, units_u in plan.extra_boluses:
            boluses[block, int(time_min)] += units_u
    carbs = spread_meals(carbs_at)
    full = Scenario(carbs, boluses + basal[:, None] / 60.0)
    x = np.tile(start_states, (len(plans), 1))
    dose = np.tile(start_dose, len(plans))
    vg = big.Vg
    glucose = np.empty((rows, horizon_min + 1))
    glucose[:, 0] = x[:, 12] / vg
    now = 0
    for boundary in sorted(set(meal_bolus_at) | {horizon_min}):
        if boundary > now:
            part = full.window(now, boundary)
            out = simulate(big, part, initial_states=x, initial_meal_dose_mg=dose)
            glucose[:, now + 1 : boundary + 1] = out.subcutaneous_glucose_mgdl[:, 1:]
            x, dose, now = out.final_states, out.final_meal_dose_mg, boundary
        if boundary in meal_bolus_at and boundary < horizon_min:
            cgm = x[:, 12] / vg
            for row, carbs_g in meal_bolus_at[boundary]:
                units = carbs_g / ratio[row]
                if correct[row] and cgm[row] > target[row]:
                    units += (cgm[row] - target[row]) / factor[row]
                boluses[row, boundary] += units
                full.insulin_u_per_min[row, boundary] += units
    outcomes = []
    for k, plan in enumerate(plans):
        block = slice(k * n, (k + 1) * n)
        values = metrics_rows(glucose[block])
        outcomes.append(PlanOutcome(
            plan=plan, glucose_mgdl=glucose[block], bolus_u=boluses[block],
            median={m: float(np.median(values[m])) for m in ALL_METRIC_NAMES},
            low={m: float(np.percentile(values[m], 5)) for m in ALL_METRIC_NAMES},
            high={m: float(np.percentile(values[m], 95)) for m in ALL_METRIC_NAMES},
        ))
    return WhatIfResult(twin.patient_id, np.arange(horizon_min + 1, dtype=float), meals, outcomes, n)
