"""Patient-twin benchmark: the UVA/Padova model (node/twins) over a cohort of 1,000 patient-days.

    twinledger bench twin --json

- **Cohort**: 1,000 virtual patients, each one of the 30 published parameter sets (cycled: 33 or 34 copies
  of each), simulated for one day (1,440 one-minute steps) from their basal steady state, all at once.
- **Scenario**: three meals a day, each patient's own (seeded): breakfast 30-60 g around 07:00, lunch
  50-90 g around 12:30, dinner 50-100 g around 19:00, each eaten at 5 g/min (the reference's eating rate),
  with a bolus of carbs / CR (the patient's carbohydrate ratio) at the start of the meal, rounded by an
  Insulet pump; basal insulin at each patient's steady-state rate u2ss, also through the pump, every patient
  starting at the steady state of that delivered basal.
- **Batched**: `node.twins.uva_padova.simulate`, RK4 at 1-minute steps on numpy arrays (patients, 13).
- **Loop**: one patient at a time with scipy's adaptive `solve_ivp` (RK45, rtol = atol = 1e-6) over each
  stretch of constant input, the way a per-patient simulator runs. The loop is timed on a subset (one
  patient of each of the 30 parameter sets, with their own scenarios) and scaled to the cohort: the
  output says so (`loop_timed_patients`, `loop_s_scaled_to_cohort`).
- **Speed vs real time**: simulated patient-time (1,000 patient-days) over wall time; `cohort_days_per_s`
  counts calendar time of the whole cohort instead (1 day of 1,000 patients per ... seconds).
- **Calibration and forecast** (`node.twins.validation.validate`): each of the 30 virtual patients lives
  4 days at home (meals, carb-counted boluses, pump, CGM noise); its twin is calibrated on days 1-3 with
  a prior from the other 29 (its own parameters hidden), then forecasts 30 and 60 min ahead every 30 min
  of day 4 from what is known at each origin. `param_recovery_error` is the median relative error over
  patients and the identifiable fitted parameters (below); `rmse_30min_mgdl` and
  `rmse_60min_mgdl` are against the CGM readings (noise included, as published figures are).
- **Against an independent reference** (`reference_max_abs_dbg_mgdl`): each of the 30 virtual patients
  over a day of three meals (50, 70, 80 g eaten at 5 g/min) with boluses of carbs / CR, the batched twin
  against node/twins/reference.py (the equations written out again, scipy solve_ivp at rtol = atol = 1e-8,
  the published table, the reference simulator's meal rule; it imports nothing of the model): the largest
  |difference| in plasma or subcutaneous glucose over the day, worst patient (goal < 2 mg/dL).
- **Identifiability** (`node.twins.identifiability`, Fisher information at the true parameters of
  `identifiability_patients` virtual patients, every third of the 30 for a mix of ages, 3 days each):
  `identifiable_parameters` are those whose posterior relative sd stays below 0.1 (median over patients)
  when every other parameter is only known to the population's spread, as calibration faces it (the
  Bayesian Cramer-Rao bound; `identifiable_posterior_relative_sd`); `identifiable_parameters_others_known`
  is the earlier greedy set, with every other parameter assumed known. Calibration fits Gb, kmin, kp3, ki,
  kmax, k1 and Vmx (node/twins/twin.py FITTED); `param_recovery_error` and `prior_only_recovery_error` are
  the median relative errors of the twins and of the prior mean alone on the parameters both identifiable
  and fitted (`param_recovery_error_covers`; `..._others_known_set` on the earlier set); `..._all_fitted`
  and `..._by_parameter` cover every fitted one.
- **Therapy optimiser** (`node.twins.optimiser_check`): from each validation twin and the patient's default
  therapy, the optimiser's plan; both plans on the TRUE patient over 3 held-out days:
  `optimiser_tir_gain_pct` and `optimiser_tbr70_change_pct` are the mean changes in percentage points;
  per patient, `optimiser_patients_tir_down_to_fix_hypo` counts those whose time in range fell where the
  default broke the hypoglycaemia limits on the twin (the plan trades range for safety, on purpose) and
  `optimiser_patients_tir_down_otherwise` the rest.
- **Federated forecaster**: `federated_forecaster_rmse_30min_mgdl()` (benchmarks/twin_federation.py, one
  study end to end on anvil) when it is there; null, with the reason, when it is not or fails.
"""

from __future__ import annotations

import time

import numpy as np

from node.twins.devices import InsulinPump
from node.twins.uva_padova import DEFAULT_EATING_RATE_G_PER_MIN, Cohort, Scenario, eat_meals, patient_names, simulate, simulate_one_patient_solve_ivp
from node.twins.steady_state import basal_states

DAY_MIN = 24 * 60


def _cohort_scenario(cohort: Cohort, days: int, rng: np.random.Generator) -> Scenario:
    patients, minutes = len(cohort), days * DAY_MIN
    pump = InsulinPump.load("Insulet")
    meals_g = np.zeros((patients, minutes))
    insulin = np.zeros((patients, minutes)) + (pump.basal_u_per_h(cohort.basal_rate_u_per_h) / 60.0)[:, None]
    meals = [(7 * 60, 30, 30, 60), (12 * 60 + 30, 30, 50, 90), (19 * 60, 45, 50, 100)]  # time, spread, g range
    rows = np.arange(patients)
    for day in range(days):
        for time_min, spread_min, low_g, high_g in meals:
            start = day * DAY_MIN + time_min + rng.integers(-spread_min, spread_min + 1, patients)
            carbs_g = rng.uniform(low_g, high_g, patients).round()
            meals_g[rows, start] += carbs_g
            insulin[rows, start] += pump.bolus_u(carbs_g / cohort.carb_ratio_g_per_u)
    return Scenario(carbs_g_per_min=eat_meals(meals_g, DEFAULT_EATING_RATE_G_PER_MIN), insulin_u_per_min=insulin)


def reference_check(names=None) -> dict:
    """Worst |batched twin - independent reference| (mg/dL) over a meal-and-bolus day of each patient."""
    from node.twins import reference

    names = list(names or patient_names())
    inputs = [reference.reference_day(n) for n in names]
    cohort = Cohort.load(names)
    started = time.perf_counter()
    batched = simulate(cohort, Scenario(np.stack([c for c, _ in inputs]), np.stack([i for _, i in inputs])))
    worst = {}
    for k, name in enumerate(names):
        ref = reference.reference_glucose(name, *inputs[k])
        worst[name] = float(max(np.abs(batched.plasma_glucose_mgdl[k] - ref["plasma_glucose_mgdl"]).max(),
                                np.abs(batched.subcutaneous_glucose_mgdl[k] - ref["subcutaneous_glucose_mgdl"]).max()))
    worst_name = max(worst, key=worst.get)
    return {"reference_max_abs_dbg_mgdl": round(worst[worst_name], 3), "reference_worst_patient": worst_name,
            "reference_patients_within_2_mgdl": sum(v < 2.0 for v in worst.values()),
            "reference_patients": len(worst), "reference_check_s": round(time.perf_counter() - started, 1)}


def _federated_rmse_30min_mgdl() -> tuple[float | None, str | None]:
    try:
        try:
            from federation.tasks.glucose_forecast import federated_forecaster_rmse_30min_mgdl
        except ImportError:
            from .twin_federation import federated_forecaster_rmse_30min_mgdl
    except ImportError:
        return None, "no federated glucose forecaster in this tree"
    try:
        return round(float(federated_forecaster_rmse_30min_mgdl()), 1), None
    except Exception as exc:  # the figure is optional: report why it is missing rather than fail the bench
        return None, f"{type(exc).__name__}: {exc}"


def _recovery_on(validation: dict | None, symbols: list[str]) -> dict:
    """Median relative error, over patients and `symbols`, of the calibrated twins and of the prior mean alone."""
    if not validation or not symbols:
        return {}
    fitted = [p["recovery_error"][s] for p in validation["per_patient"] for s in symbols]
    prior = [p["prior_only_error"][s] for p in validation["per_patient"] for s in symbols]
    return {"param_recovery_error": round(float(np.median(fitted)), 3),
            "prior_only_recovery_error": round(float(np.median(prior)), 3)}


def bench_twin(*, patients: int = 1000, days: int = 1, loop_patients: int = 30, seed: int = 1,
               validation_patients: int = 30, federated: bool = True, identifiability_patients: int = 10,
               optimiser: bool = True) -> dict:
    """Simulate `patients` x `days` batched, and a subset one patient at a time with solve_ivp; calibrate
    and forecast `validation_patients` virtual patients; the federated forecaster's RMSE if asked."""
    names = patient_names()
    cohort = Cohort.load([names[i % len(names)] for i in range(patients)])
    scenario = _cohort_scenario(cohort, days, np.random.default_rng(seed))
    minutes = days * DAY_MIN

    # every patient starts at the steady state of the basal the pump delivers (u2ss rounded to 0.05 U/h)
    pump = InsulinPump.load("Insulet")
    sets = Cohort.load(names)
    start_by_name = dict(zip(names, basal_states(sets, pump.basal_u_per_h(sets.basal_rate_u_per_h))))
    starts = np.stack([start_by_name[n] for n in cohort.names])
    simulate(Cohort.load(names[:2]), Scenario.build(Cohort.load(names[:2]), 10))  # warm-up
    started = time.perf_counter()
    batched = simulate(cohort, scenario, initial_states=starts)
    batched_s = time.perf_counter() - started

    loop_patients = min(loop_patients, patients)
    started = time.perf_counter()
    loop_glucose = [
        simulate_one_patient_solve_ivp(cohort.patients[i], scenario.carbs_g_per_min[i], scenario.insulin_u_per_min[i],
                                       rtol=1e-6, atol=1e-6, initial_states=starts[i])
        for i in range(loop_patients)
    ]
    loop_s = time.perf_counter() - started
    loop_scaled_s = loop_s * patients / loop_patients
    difference_mgdl = float(np.abs(np.array(loop_glucose) - batched.plasma_glucose_mgdl[:loop_patients]).max())

    glucose = batched.plasma_glucose_mgdl
    patient_days = patients * days
    reference = reference_check()

    from node.twins.validation import validate

    started = time.perf_counter()
    validation = (validate(patient_names()[:validation_patients], seed=seed, optimiser=optimiser)
                  if validation_patients else None)
    validation_s = time.perf_counter() - started
    identifiable = {}
    if identifiability_patients:
        from node.twins.identifiability import identifiability

        started = time.perf_counter()
        found = identifiability(names[:: max(1, len(names) // identifiability_patients)][:identifiability_patients])
        fitted = validation["param_recovery_error_by_parameter"] if validation else {}
        both = [s for s in found["identifiable_parameters_others_unknown"] if s in fitted]
        known = [s for s in found["identifiable_parameters"] if s in fitted]
        identifiable = {
            **_recovery_on(validation, both),
            **{f"{k}_others_known_set": v for k, v in _recovery_on(validation, known).items()},
            "identifiability_patients": identifiability_patients,
            "identifiability_s": round(time.perf_counter() - started, 1),
            "identifiable_parameters": found["identifiable_parameters_others_unknown"],
            "identifiable_posterior_relative_sd": {s: sd for s, sd in found["posterior_relative_sd_others_unknown"].items()
                                                   if s in fitted or not fitted},
            "identifiable_parameters_others_known": found["identifiable_parameters"],
            "identifiable_relative_sd_others_known": found["relative_sd_joint"],
            "param_recovery_error_covers": both,
            "param_recovery_error_others_known_set_covers": known,
        }
    federated_rmse, federated_note = _federated_rmse_30min_mgdl() if federated else (None, "not run (federated=False)")
    twin_figures = {} if validation is None else {
        "validation_patients": validation["patients"],
        "validation_s": round(validation_s, 1),
        "fitted_parameters": validation["fitted"],
        "param_recovery_error_all_fitted": validation["param_recovery_error"],
        "param_recovery_error_by_parameter": validation["param_recovery_error_by_parameter"],
        "prior_only_recovery_error_all_fitted": validation["prior_median_recovery_error"],
        "prior_only_recovery_error_by_parameter": validation["prior_recovery_error_by_parameter"],
        **{k: v for k, v in validation.items() if k.startswith("optimiser_") and k != "optimiser_per_patient"},
        "rmse_30min_vs_true_glucose_mgdl": validation["rmse_30min_vs_true_glucose_mgdl"],
        "rmse_60min_vs_true_glucose_mgdl": validation["rmse_60min_vs_true_glucose_mgdl"],
        "rmse_30min_last_value_mgdl": validation["rmse_30min_last_value_mgdl"],
        "rmse_60min_last_value_mgdl": validation["rmse_60min_last_value_mgdl"],
        "forecast_origins": validation["forecast_origins"],
    }
    return {
        "benchmark": "twin",
        "model": "UVA/Padova T1D, 13 states, RK4 at 1 min (numpy, batched)",
        "patients": patients,
        "parameter_sets": len(names),
        "days": days,
        "patients_days_simulated": patient_days,
        "steps_per_patient": minutes,
        "batched_s": round(batched_s, 3),
        "sim_speed_vs_realtime": round(patient_days * DAY_MIN * 60 / batched_s),
        "cohort_days_per_s": round(days / batched_s, 3),
        "loop_method": "scipy solve_ivp RK45 rtol=atol=1e-6, one patient at a time",
        "loop_timed_patients": loop_patients,
        "loop_s_timed": round(loop_s, 3),
        "loop_s_scaled_to_cohort": round(loop_scaled_s, 1),
        "loop_scaled_from_subset": loop_patients < patients,
        "loop_sim_speed_vs_realtime": round(loop_patients * days * DAY_MIN * 60 / loop_s),
        "batched_vs_loop_ratio": round(loop_scaled_s / batched_s, 1),
        "max_glucose_difference_mgdl": round(difference_mgdl, 4),
        **reference,
        "cohort_mean_glucose_mgdl": round(float(glucose.mean()), 1),
        "cohort_time_in_range_70_180": round(float(((glucose >= 70) & (glucose <= 180)).mean()), 3),
        "cohort_time_below_70": round(float((glucose < 70).mean()), 3),
        **twin_figures,
        **identifiable,
        "federated_note": federated_note,
        "param_recovery_error": identifiable.get("param_recovery_error", validation and validation["param_recovery_error"]),
        "prior_only_recovery_error": identifiable.get("prior_only_recovery_error",
                                                      validation and validation["prior_median_recovery_error"]),
        "rmse_30min_mgdl": validation and validation["rmse_30min_mgdl"],
        "rmse_60min_mgdl": validation and validation["rmse_60min_mgdl"],
        "federated_rmse_30min_mgdl": federated_rmse,
    }
