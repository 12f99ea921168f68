"""Therapy optimisation on a calibrated twin: decision support for a clinician, never a prescription.

For a calibrated patient, search the basal rate (U/h), carbohydrate ratio CR (g/U) and correction factor
CF (mg/dL/U) for the plan that maximises time in range 70-180 mg/dL while the time below 70 stays under 4 %
and below 54 under 1 % (the 2019 consensus targets, Battelino et al., Diabetes Care 42(8)), **robustly**:
the limits must hold at the calibration ensemble's 95th percentile, not only for the MAP twin.

- **What a plan is evaluated on**: the patient's own recent days (the meals of the record's last
  `days` days, eaten at their recorded rates), from the steady state of the plan's basal, dosed by a bolus
  calculator at each meal: carbs / CR plus (sensor glucose - target) / CF when above target, rounded by the
  pump. Each ensemble member counts carbs with its own error (15 %, the same draws for every plan).
  Every candidate plan is simulated for every ensemble member in ONE batched simulation
  (`dose_and_simulate`; and across patients when several are optimised together, `optimise_many`).
- **Search**: a pattern (compass) search in log space starting from the patient's current therapy: each
  iteration tries the current best plan with each setting up and down by one step (x1.25 to start), moves to
  the best neighbour that improves the score, else halves the step, down to x1.06. Settings stay within half
  and twice the current ones and are rounded as a clinician would set them (basal 0.05 U/h, CR 0.5 g/U,
  CF 1 mg/dL/U). Score: a plan meeting both limits beats any plan that does not; among plans meeting them,
  higher mean time in range over the ensemble (a move must gain at least MIN_GAIN); among plans that do
  not, the smaller excess over the limits.
- **Conservative, per patient**: a candidate is admissible only when the ensemble is confident it does
  not raise time below 70 compared with the current plan (the change, paired member by member on the same
  carb-counting draws, is <= 0 at the ROBUST_PERCENTILE-th percentile) and, when the current plan already
  meets the limits, does not lower time in range (the change >= 0 at the (100 - ROBUST_PERCENTILE)-th
  percentile). When no admissible plan beats the current one the answer keeps it and says why
  (`recommendation` "no change recommended: ..."). When the current plan breaks the limits, a plan that
  lowers time in range to meet them is admissible (`fixes_hypoglycaemia`): that is the clinical call.
- The result shows the current and proposed plans side by side with median and 5-95 % bands over the
  ensemble. Checked on held-out days of virtual patients against their default therapy
  (node/twins/optimiser_check.py, docs/twins.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from node.twins.devices import InsulinPump
from node.twins.glycemia import ALL_METRIC_NAMES, metrics_rows
from node.twins.parameters import Cohort, PatientParameters
from node.twins.records import DiabetesRecord
from node.twins.steady_state import basal_steady_state
from node.twins.twin import DAY_MIN, CalibratedTwin, Therapy, spread_meals
from node.twins.uva_padova import Scenario, simulate

TBR70_LIMIT = 0.04
TBR54_LIMIT = 0.01
ROBUST_PERCENTILE = 95  # the limits must hold at this percentile of the ensemble
TARGET_GLUCOSE_MGDL = 120.0
START_STEP = math.log(1.25)
END_STEP = math.log(1.06)
BOUNDS = (0.5, 2.0)  # each setting between half and twice the current one
MIN_GAIN = 0.002  # a move must raise mean time in range by 0.2 percentage points
CARB_COUNT_ERROR_SD = 0.15  # relative error of a patient's carb counting (as the virtual patients have)
ROUNDING = (0.05, 0.5, 1.0)  # basal U/h, CR g/U, CF mg/dL/U
NOTE = ("Decision support for a clinician: a plan the patient's calibrated twin suggests, to be reviewed with "
        "the patient and their records. It is not a prescription; the twin was validated on virtual patients only.")


@dataclass(frozen=True)
class TherapySettings:
    basal_u_per_h: float
    carb_ratio_g_per_u: float
    correction_factor_mgdl_per_u: float

    def as_log(self) -> np.ndarray:
        return np.log([self.basal_u_per_h, self.carb_ratio_g_per_u, self.correction_factor_mgdl_per_u])

    @classmethod
    def of(cls, therapy: Therapy) -> "TherapySettings":
        return cls(therapy.basal_u_per_h, therapy.carb_ratio_g_per_u, therapy.correction_factor_mgdl_per_u)


def _rounded(log_settings: np.ndarray, current: TherapySettings) -> TherapySettings:
    base = current.as_log()
    clipped = np.clip(log_settings, base + math.log(BOUNDS[0]), base + math.log(BOUNDS[1]))
    values = [max(step, round(math.exp(v) / step) * step) for v, step in zip(clipped, ROUNDING)]
    return TherapySettings(*(round(v, 4) for v in values))


def dose_and_simulate(patients: list[PatientParameters], *, basal_u_per_h, carb_ratio_g_per_u,
                      correction_factor_mgdl_per_u, meals_g: np.ndarray, eating_rate_g_per_min=None,
                      bolus_carbs_g: np.ndarray | None = None, target_mgdl: float = TARGET_GLUCOSE_MGDL,
                      pump: InsulinPump | None = None) -> np.ndarray:
    """Each row (a patient under a plan) from the steady state of its basal, eating `meals_g` (g at each meal's
    first minute, (rows, minutes)) and bolusing at each meal carbs / CR + (sensor glucose - target) / CF above
    target (on `bolus_carbs_g`, the carbs as counted, default the carbs eaten). Returns the sensor glucose
    Gs/Vg (mg/dL), (rows, minutes + 1); a row whose basal holds no steady state is NaN."""
    pump = pump or InsulinPump.load("Insulet")
    rows, minutes = meals_g.shape
    basal = pump.basal_u_per_h(np.broadcast_to(np.asarray(basal_u_per_h, dtype=float), (rows,)))
    ratio = np.broadcast_to(np.asarray(carb_ratio_g_per_u, dtype=float), (rows,))
    factor = np.broadcast_to(np.asarray(correction_factor_mgdl_per_u, dtype=float), (rows,))
    counted = meals_g if bolus_carbs_g is None else bolus_carbs_g
    starts, valid = [], np.ones(rows, dtype=bool)
    for k, (patient, rate) in enumerate(zip(patients, basal)):
        try:
            starts.append(basal_steady_state(patient.values, float(rate)))
        except ValueError:  # a basal so high that no glucose holds: the plan is refused below
            starts.append(patient.initial_states)
            valid[k] = False
    cohort = Cohort.of(patients)
    insulin = np.repeat((basal / 60.0)[:, None], minutes, axis=1)
    full = Scenario(spread_meals(meals_g, eating_rate_g_per_min), insulin)
    x, dose = np.stack(starts), np.zeros(rows)
    vg = cohort.Vg
    glucose = np.empty((rows, minutes + 1))
    glucose[:, 0] = x[:, 12] / vg
    now = 0
    meal_minutes = np.flatnonzero((meals_g > 0).any(axis=0))
    for boundary in [*meal_minutes, minutes]:
        if boundary > now:
            out = simulate(cohort, full.window(now, boundary), initial_states=x, initial_meal_dose_mg=dose)
            glucose[:, now + 1 : boundary + 1] = out.subcutaneous_glucose_mgdl[:, 1:]
            x, dose, now = out.final_states, out.final_meal_dose_mg, boundary
        if boundary < minutes:
            eating = meals_g[:, boundary] > 0
            sensor = x[:, 12] / vg
            units = counted[:, boundary] / ratio + np.where(sensor > target_mgdl, (sensor - target_mgdl) / factor, 0.0)
            full.insulin_u_per_min[:, boundary] += np.where(eating, pump.bolus_u(units), 0.0)
    glucose[~valid] = np.nan
    return glucose


def range_times(glucose_mgdl: np.ndarray) -> dict[str, np.ndarray]:
    """Time in 70-180, below 70 and below 54 of each row (fractions); NaN rows give NaN."""
    finite = np.isfinite(glucose_mgdl).all(axis=1)
    g = np.where(np.isfinite(glucose_mgdl), glucose_mgdl, 0.0)
    out = {"time_in_range_70_180": ((g >= 70) & (g <= 180)).mean(axis=1),
           "time_below_70": (g < 70).mean(axis=1), "time_below_54": (g < 54).mean(axis=1)}
    return {k: np.where(finite, v, np.nan) for k, v in out.items()}


@dataclass
class PlanSummary:
    name: str
    settings: TherapySettings
    median: dict
    low: dict  # 5th percentile over the ensemble
    high: dict  # 95th
    meets_limits: bool  # time below 70 and 54 under their limits at the ensemble's 95th percentile


@dataclass
class TherapyOptimisation:
    patient_id: str
    current: PlanSummary
    proposed: PlanSummary
    members: int
    days: int
    plans_evaluated: int
    iterations: int
    recommendation: str = ""  # "change: ..." or "no change recommended: ..."
    changed: bool = False
    fixes_hypoglycaemia: bool = False  # the current plan breaks the limits on the twin; the proposal meets them
    paired_change: dict = field(default_factory=dict)  # proposed - current, paired per member: low/median/high
    note: str = NOTE
    limits: dict = field(default_factory=lambda: {"time_below_70": TBR70_LIMIT, "time_below_54": TBR54_LIMIT,
                                                  "percentile": ROBUST_PERCENTILE})


@dataclass
class _Search:
    twin: CalibratedTwin
    members: list[PatientParameters]
    meals_g: np.ndarray  # (minutes,)
    rates: np.ndarray | None
    counted_g: np.ndarray  # (members, minutes): each member's carb counts of those meals
    current: TherapySettings
    step: float = START_STEP
    best: TherapySettings | None = None
    scores: dict = field(default_factory=dict)  # TherapySettings -> score tuple
    glucose: dict = field(default_factory=dict)  # TherapySettings -> (members, minutes + 1)
    iterations: int = 0
    done: bool = False

    def neighbours(self) -> list[TherapySettings]:
        centre = self.best.as_log()
        found = []
        for axis in range(3):
            for sign in (+1, -1):
                candidate = _rounded(centre + sign * self.step * np.eye(3)[axis], self.current)
                if candidate not in self.scores and candidate not in found:
                    found.append(candidate)
        return found


def _paired_change(search: "_Search", plan: TherapySettings) -> dict[str, np.ndarray]:
    """Per ensemble member: plan minus current, time in range and time below 70 (same member, same carb counts)."""
    new, old = range_times(search.glucose[plan]), range_times(search.glucose[search.current])
    return {k: new[k] - old[k] for k in ("time_in_range_70_180", "time_below_70")}


def _admissible(search: "_Search", plan: TherapySettings) -> bool:
    """The ensemble is confident the plan does not raise time below 70 and, when the current plan meets the
    limits, does not lower time in range."""
    if plan == search.current:
        return True
    change = _paired_change(search, plan)
    if not np.isfinite(change["time_below_70"]).all():
        return False
    if np.percentile(change["time_below_70"], ROBUST_PERCENTILE) > 0:
        return False
    current_ok = search.scores[search.current][0]
    return not current_ok or np.percentile(change["time_in_range_70_180"], 100 - ROBUST_PERCENTILE) >= 0


def _score(glucose: np.ndarray) -> tuple:
    """(meets both limits, then higher is better): feasible plans by mean time in range, others by excess."""
    times = range_times(glucose)
    if not np.isfinite(times["time_below_70"]).all():
        return (False, -math.inf)
    tbr70 = float(np.percentile(times["time_below_70"], ROBUST_PERCENTILE))
    tbr54 = float(np.percentile(times["time_below_54"], ROBUST_PERCENTILE))
    excess = max(0.0, tbr70 - TBR70_LIMIT) + 4 * max(0.0, tbr54 - TBR54_LIMIT)
    if excess > 0:
        return (False, -excess)
    return (True, float(times["time_in_range_70_180"].mean()))


def _better(new: tuple, old: tuple) -> bool:
    if new[0] != old[0]:
        return new[0]
    return new[1] > old[1] + (MIN_GAIN if new[0] else 1e-6)


def _evaluate(jobs: list[tuple[_Search, TherapySettings]]) -> None:
    """Simulate every (search, plan) job for every ensemble member of its search, in one batch."""
    patients, basal, ratio, factor, meals, rates, counted = [], [], [], [], [], [], []
    for search, plan in jobs:
        n = len(search.members)
        patients += search.members
        basal += [plan.basal_u_per_h] * n
        ratio += [plan.carb_ratio_g_per_u] * n
        factor += [plan.correction_factor_mgdl_per_u] * n
        meals.append(np.repeat(search.meals_g[None, :], n, axis=0))
        counted.append(search.counted_g)
        rate = search.rates if search.rates is not None else np.full(len(search.meals_g), np.nan)
        rates.append(np.repeat(rate[None, :], n, axis=0))
    width = max(m.shape[1] for m in meals)
    pad = lambda a, value: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=value)  # noqa: E731
    glucose = dose_and_simulate(patients, basal_u_per_h=np.array(basal), carb_ratio_g_per_u=np.array(ratio),
                                correction_factor_mgdl_per_u=np.array(factor),
                                meals_g=np.vstack([pad(m, 0.0) for m in meals]),
                                eating_rate_g_per_min=np.vstack([pad(r, np.nan) for r in rates]),
                                bolus_carbs_g=np.vstack([pad(c, 0.0) for c in counted]))
    row = 0
    for search, plan in jobs:
        n, minutes = len(search.members), len(search.meals_g)
        search.glucose[plan] = glucose[row : row + n, : minutes + 1]
        score = _score(search.glucose[plan])
        search.scores[plan] = score if _admissible(search, plan) else (False, -math.inf)
        row += n


def optimise_many(twins: list[CalibratedTwin], records: list[DiabetesRecord], *, currents=None, days: int = 2,
                  members: int = 12, seed: int = 0, max_iterations: int = 12,
                  carb_count_error_sd: float = CARB_COUNT_ERROR_SD) -> list[TherapyOptimisation]:
    """Optimise several patients' therapy together (one batched simulation per iteration for all).
    `currents`: the therapy to start from, per patient (default: each twin's therapy, read from its record).
    Each ensemble member also counts the meals' carbs with its own error (sd `carb_count_error_sd`), the same
    draws for every plan, so the limits must hold under counting errors as well as parameter uncertainty."""
    currents = currents or [TherapySettings.of(t.therapy) for t in twins]
    searches = []
    for twin, record, current in zip(twins, records, currents):
        window = min(record.minutes, days * DAY_MIN)
        if window < 6 * 60:
            raise ValueError("therapy optimisation needs at least 6 hours of meals in the record")
        first = record.minutes - window
        rates = None if record.eating_rate_g_per_min is None else np.asarray(record.eating_rate_g_per_min[first:], float)
        current = TherapySettings(*(float(v) for v in (current.basal_u_per_h, current.carb_ratio_g_per_u,
                                                        current.correction_factor_mgdl_per_u)))
        if min(current.carb_ratio_g_per_u, current.correction_factor_mgdl_per_u) <= 0 or current.basal_u_per_h <= 0:
            raise ValueError("the current therapy needs a positive basal, carb ratio and correction factor")
        meals_g = np.asarray(record.carbs_g[first:], dtype=float)
        # each patient's own draws: a patient's answer does not depend on who else is in the batch
        draws = np.random.default_rng(seed).standard_normal((members, len(meals_g)))
        counting = np.maximum(0.3, 1 + carb_count_error_sd * draws)
        searches.append(_Search(twin, twin.patients(twin.ensemble_log(members, seed=seed)), meals_g, rates,
                                meals_g[None, :] * counting, current, best=current))
    _evaluate([(s, s.current) for s in searches])
    while True:
        active = [s for s in searches if not s.done]
        if not active:
            break
        jobs = []
        for s in active:
            s.iterations += 1
            candidates = s.neighbours()
            while not candidates and s.step / 2 >= END_STEP:
                s.step /= 2
                candidates = s.neighbours()
            if not candidates or s.iterations > max_iterations:
                s.done = True
            jobs += [(s, c) for c in candidates if not s.done]
        if jobs:
            _evaluate(jobs)
        for s in active:
            if s.done:
                continue
            tried = [c for j, c in jobs if j is s]
            top = max(tried, key=lambda c: (s.scores[c][0], s.scores[c][1]))
            if _better(s.scores[top], s.scores[s.best]):
                s.best = top
            elif s.step / 2 >= END_STEP:
                s.step /= 2
            else:
                s.done = True
    return [_result(s) for s in searches]


def _result(search: _Search) -> TherapyOptimisation:
    current_ok = search.scores[search.current][0]
    changed = search.best != search.current
    change = _paired_change(search, search.best)
    band = {k: {"low": float(np.percentile(v, 100 - ROBUST_PERCENTILE)), "median": float(np.median(v)),
                "high": float(np.percentile(v, ROBUST_PERCENTILE))} for k, v in change.items()}
    fixes = changed and not current_ok and search.scores[search.best][0]
    if changed and fixes:
        why = ("change: the current plan breaks the hypoglycaemia limits on the twin; the proposed plan meets them "
               f"and does not raise time below 70 for {ROBUST_PERCENTILE} % of the calibrated twins, even where it "
               "costs time in range")
    elif changed:
        why = (f"change: for {ROBUST_PERCENTILE} % of the calibrated twins the proposed plan does not raise time "
               "below 70" + (" or lower time in range" if current_ok else ", and it comes closer to the limits"))
    elif current_ok:
        why = ("no change recommended: no plan within half and twice the current settings raises time in range "
               f"without raising time below 70 or lowering time in range for more than {100 - ROBUST_PERCENTILE} % "
               "of the calibrated twins")
    else:
        why = ("no change recommended: the current plan breaks the hypoglycaemia limits on the twin, but no plan "
               f"within half and twice the current settings keeps time below 70 from rising for {ROBUST_PERCENTILE} % "
               "of the calibrated twins; review the patient's hypoglycaemia with them")
    return TherapyOptimisation(
        patient_id=search.twin.patient_id, current=_summary("current", search, search.current),
        proposed=_summary("proposed", search, search.best), members=len(search.members),
        days=int(math.ceil(len(search.meals_g) / DAY_MIN)), plans_evaluated=len(search.scores),
        iterations=search.iterations, recommendation=why, changed=changed, fixes_hypoglycaemia=bool(fixes),
        paired_change=band)


def optimise_therapy(twin: CalibratedTwin, record: DiabetesRecord, **options) -> TherapyOptimisation:
    """The robustly best basal, CR and CF for one calibrated patient, from their current therapy."""
    current = options.pop("current", None)
    return optimise_many([twin], [record], currents=[current] if current else None, **options)[0]


def _summary(name: str, search: _Search, plan: TherapySettings) -> PlanSummary:
    values = metrics_rows(np.clip(search.glucose[plan], 1.0, None))
    return PlanSummary(name=name, settings=plan,
                       median={m: float(np.median(values[m])) for m in ALL_METRIC_NAMES},
                       low={m: float(np.percentile(values[m], 5)) for m in ALL_METRIC_NAMES},
                       high={m: float(np.percentile(values[m], 95)) for m in ALL_METRIC_NAMES},
                       meets_limits=bool(_score(search.glucose[plan])[0]))
