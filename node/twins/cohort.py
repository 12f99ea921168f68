"""Virtual type 1 diabetes patients for each hospital: the UVA/Padova model living several days each.

- Hospitals get disjoint subsets of the 30 published parameter sets (adolescents, adults and children
  dealt round-robin, so each hospital has a mix); a parameter set can live several virtual lives at one
  hospital (`lives_per_parameter_set`: same physiology, different meals, dosing errors and sensor noise).
- Meals every day at random times and sizes: breakfast 06:30-09:00 (30-70 g), lunch 11:30-14:00 (40-90 g),
  dinner 18:00-20:30 (50-100 g), each eaten at `eating_rate_g_per_min` (5 g/min by default, the
  reference simulator's rate; recorded with the meal); a snack (10-30 g) on half of the afternoons
  (15:00-17:00) and on a third of the evenings (21:00-22:30).
- Boluses by the patient's carbohydrate ratio on the patient's own carbohydrate estimate (log-normal
  error, sd 20 %), given 0-10 minutes before to 20 minutes after the meal starts; 5 % of main meals and a
  third of snacks get no bolus. Rounded and clipped by the pump (devices.InsulinPump).
- Basal: each patient's steady-state rate, as the pump can deliver it (rounded to 0.05 U/h); every patient
  starts at the steady state of that delivered basal (steady_state.basal_states), so nothing drifts.
- CGM: the sensor's noise model (devices.CGMSensor, Dexcom by default: a reading every 3 minutes).
- Age: the parameter set's published age (Quest.csv), at the record's start; the exports carry it (CSV
  `age_years`, FHIR Patient.birthDate), so a glucose study reports its metrics per age group.

Everything is drawn from one numpy generator seeded by `seed`: the same seed gives the same records. All
patients of all hospitals are simulated at once (uva_padova.simulate is batched).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from node.twins.devices import CGMSensor, InsulinPump
from node.twins.records import DiabetesRecord
from node.twins.uva_padova import DEFAULT_EATING_RATE_G_PER_MIN, Cohort, Scenario, eat_meals, patient_names, simulate
from node.twins.steady_state import basal_states

DAY_MIN = 24 * 60
START = datetime(2026, 1, 5, tzinfo=timezone.utc)
# (earliest start, latest start) in minutes of the day, (smallest, largest) g, probability the meal happens
MEALS = (
    ((6 * 60 + 30, 9 * 60), (30, 70), 1.0),
    ((11 * 60 + 30, 14 * 60), (40, 90), 1.0),
    ((15 * 60, 17 * 60), (10, 30), 0.5),
    ((18 * 60, 20 * 60 + 30), (50, 100), 1.0),
    ((21 * 60, 22 * 60 + 30), (10, 30), 1 / 3),
)
CARB_ESTIMATE_SD = 0.2
MISSED_BOLUS = {True: 0.05, False: 1 / 3}  # main meal, snack


def hospital_parameter_sets(hospitals: int, names: list[str] | None = None) -> list[list[str]]:
    """Disjoint subsets of the parameter sets, one per hospital, each with a mix of age groups."""
    names = patient_names() if names is None else list(names)
    if not 1 <= hospitals <= len(names):
        raise ValueError(f"hospitals must be between 1 and {len(names)}")
    return [names[h::hospitals] for h in range(hospitals)]


def _scenario(cohort: Cohort, days: int, rng: np.random.Generator, pump: InsulinPump,
              eating_rate_g_per_min: float) -> tuple[Scenario, np.ndarray, np.ndarray]:
    patients, minutes = len(cohort), days * DAY_MIN
    rows = np.arange(patients)
    meals_g = np.zeros((patients, minutes))
    insulin = np.zeros((patients, minutes)) + (pump.basal_u_per_h(cohort.basal_rate_u_per_h) / 60.0)[:, None]
    bolus = np.zeros((patients, minutes))
    for day in range(days):
        for (earliest, latest), (low_g, high_g), probability in MEALS:
            eaten = rng.random(patients) < probability
            start = day * DAY_MIN + rng.integers(earliest, latest + 1, patients)
            carbs_g = np.where(eaten, rng.uniform(low_g, high_g, patients).round(), 0.0)
            meals_g[rows, start] += carbs_g
            estimate_g = carbs_g * rng.lognormal(0.0, CARB_ESTIMATE_SD, patients)
            missed = rng.random(patients) < MISSED_BOLUS[probability == 1.0]
            dose_u = np.where(eaten & ~missed, pump.bolus_u(estimate_g / cohort.carb_ratio_g_per_u), 0.0)
            at = np.clip(start + rng.integers(-10, 21, patients), 0, minutes - 1)
            bolus[rows, at] += dose_u
    carbs = eat_meals(meals_g, eating_rate_g_per_min)
    return Scenario(carbs_g_per_min=carbs, insulin_u_per_min=insulin + bolus), bolus, meals_g


def simulate_patients(
    parameter_sets: list[str],
    *,
    days: int,
    seed: int,
    patient_prefix: str = "T1D",
    lives_per_parameter_set: int = 1,
    sensor: str = "Dexcom",
    pump: str = "Insulet",
    start: datetime = START,
    eating_rate_g_per_min: float = DEFAULT_EATING_RATE_G_PER_MIN,
) -> list[DiabetesRecord]:
    """Records of virtual patients (`lives_per_parameter_set` per parameter set), `days` days each."""
    if days < 1:
        raise ValueError("days must be at least 1")
    rng = np.random.default_rng(seed)
    names = [name for name in parameter_sets for _ in range(lives_per_parameter_set)]
    cohort = Cohort.load(names)
    device = InsulinPump.load(pump)
    scenario, bolus, meals_g = _scenario(cohort, days, rng, device, eating_rate_g_per_min)
    delivered_basal = device.basal_u_per_h(cohort.basal_rate_u_per_h)
    trajectories = simulate(cohort, scenario, initial_states=basal_states(cohort, delivered_basal))
    cgm_sensor = CGMSensor.load(sensor)
    time_min, readings = cgm_sensor.read(trajectories.subcutaneous_glucose_mgdl, rng)
    minutes = days * DAY_MIN
    on_grid = time_min.astype(int) < minutes
    cgm = np.full((len(cohort), minutes), np.nan)
    cgm[:, time_min.astype(int)[on_grid]] = readings[:, on_grid].round(1)
    basal = np.broadcast_to(device.basal_u_per_h(cohort.basal_rate_u_per_h)[:, None], (len(cohort), minutes))
    records = []
    for i, name in enumerate(names):
        life = i % lives_per_parameter_set
        records.append(
            DiabetesRecord(
                patient_id=f"{patient_prefix}-{name.replace('#', '')}" + (f"-{life + 1}" if lives_per_parameter_set > 1 else ""),
                start=start,
                cgm_mgdl=cgm[i],
                carbs_g=meals_g[i].round(4),
                bolus_u=bolus[i].round(4),
                basal_u_per_h=basal[i].copy(),
                body_weight_kg=float(cohort.body_weight_kg[i]),
                age_years=cohort.patients[i].age_years,  # Quest.csv: the glucose task's age groups read it
                eating_rate_g_per_min=np.where(meals_g[i] > 0, eating_rate_g_per_min, np.nan),
            )
        )
    return records


def hospital_cohorts(
    hospitals: list[str], *, days: int, seed: int, lives_per_parameter_set: int = 1, **options
) -> dict[str, list[DiabetesRecord]]:
    """Each hospital's virtual patients (disjoint parameter sets), simulated in one batch."""
    subsets = hospital_parameter_sets(len(hospitals))
    everyone = [name for subset in subsets for name in subset]
    records = simulate_patients(everyone, days=days, seed=seed, lives_per_parameter_set=lives_per_parameter_set,
                                patient_prefix="T1D", **options)
    out, i = {}, 0
    for hospital, subset in zip(hospitals, subsets):
        n = len(subset) * lives_per_parameter_set
        out[hospital] = [
            DiabetesRecord(**{**r.__dict__, "patient_id": f"{hospital[:3].upper()}-{r.patient_id}"}) for r in records[i : i + n]
        ]
        i += n
    return out


def split_days(record: DiabetesRecord, *, first_day: int, days: int) -> DiabetesRecord:
    """Days [first_day, first_day + days) of a record (e.g. held-out days)."""
    return record.window(first_day * DAY_MIN, (first_day + days) * DAY_MIN)


def write_records(records: list[DiabetesRecord], path: Path, *, format: str = "csv") -> Path:
    """Write records as a node imports real data: "csv" (node/records/twin_csv.py) or "fhir" (a Bundle,
    node/records/twin_fhir.py)."""
    if format == "csv":
        from node.records.twin_csv import write_twin_csv

        return write_twin_csv(records, path)
    if format == "fhir":
        from node.records.twin_fhir import write_twin_bundle

        return write_twin_bundle(records, path)
    raise ValueError(f"format must be csv or fhir, not {format!r}")
