"""The therapy optimiser checked as the field checks one: on held-out days of virtual patients, does the
plan it proposes from the calibrated twin raise time in range without raising time below 70, against
each patient's default therapy?

For each virtual patient (its twin calibrated on its first days, calibration.virtual_patient):

1. default therapy: the pump's rounding of the patient's steady-state basal u2ss, and its published carb
   ratio and correction factor (Quest.csv);
2. the optimiser (node/twins/optimiser.py) searches from the default on the twin, over the meals of the
   record's last days, robustly over the calibration ensemble;
   The optimiser keeps the default unless the ensemble is confident the change does not raise time below 70
   (and, where the default meets the limits on the twin, does not lower time in range); where the default
   breaks the limits on the twin, a plan that fixes that may lower time in range: those patients are counted
   apart (`optimiser_patients_tir_down_to_fix_hypo`);
3. the TRUE patient (its own parameter set, which the twin never saw) lives `held_out_days` new days
   (the meal plan of calibration.MEAL_PLAN with a new seed, carbs counted with a 15 % error) twice, once
   under each plan, dosed by the same bolus calculator (carbs / CR, plus a correction above 120 mg/dL),
   from the steady state of each plan's basal; time in ranges on its interstitial glucose every minute.
"""

from __future__ import annotations

import time

import numpy as np

from node.twins.calibration import sample_meals
from node.twins.devices import InsulinPump
from node.twins.optimiser import TherapySettings, dose_and_simulate, optimise_many, range_times
from node.twins.parameters import PatientParameters
from node.twins.twin import DAY_MIN


def default_therapy(truth: PatientParameters, pump: InsulinPump | None = None) -> TherapySettings:
    pump = pump or InsulinPump.load("Insulet")
    return TherapySettings(float(pump.basal_u_per_h(truth.basal_rate_u_per_h)), float(truth.carb_ratio_g_per_u),
                           float(truth.correction_factor_mgdl_per_u))


def held_out_meals(days: int, rng: np.random.Generator, *, carb_count_error_sd: float = 0.15):
    """(carbs eaten, carbs as counted), g at each meal's first minute, over `days` days of MEAL_PLAN."""
    eaten, counted = np.zeros(days * DAY_MIN), np.zeros(days * DAY_MIN)
    for start, grams, estimate in sample_meals(days, rng, carb_count_error_sd=carb_count_error_sd):
        eaten[start] += grams
        counted[start] += estimate
    return eaten, counted


def optimiser_check(twins, records, truths, *, held_out_days: int = 3, seed: int = 0, members: int = 8,
                    days: int = 2) -> dict:
    """Optimise each twin from its patient's default therapy, then compare both plans on the true patients."""
    started = time.perf_counter()
    pump = InsulinPump.load("Insulet")
    defaults = [default_therapy(t, pump) for t in truths]
    results = optimise_many(list(twins), list(records), currents=defaults, days=days, members=members, seed=seed)
    optimise_s = time.perf_counter() - started
    rng = np.random.default_rng(seed + 7919)
    meals = [held_out_meals(held_out_days, rng) for _ in truths]
    plans = [(d, r.proposed.settings) for d, r in zip(defaults, results)]
    patients = [t for t in truths for _ in range(2)]
    settings = [s for pair in plans for s in pair]
    glucose = dose_and_simulate(
        patients, basal_u_per_h=[s.basal_u_per_h for s in settings],
        carb_ratio_g_per_u=[s.carb_ratio_g_per_u for s in settings],
        correction_factor_mgdl_per_u=[s.correction_factor_mgdl_per_u for s in settings],
        meals_g=np.stack([m for m, _ in meals for _ in range(2)]),
        bolus_carbs_g=np.stack([c for _, c in meals for _ in range(2)]), pump=pump)
    times = {k: v.reshape(-1, 2) for k, v in range_times(glucose[:, 1:]).items()}
    tir_gain = times["time_in_range_70_180"][:, 1] - times["time_in_range_70_180"][:, 0]
    tbr70_change = times["time_below_70"][:, 1] - times["time_below_70"][:, 0]
    fixes = np.array([r.fixes_hypoglycaemia for r in results], dtype=bool)
    per_patient = [{
        "patient": r.patient_id,
        "default": vars(d), "proposed": vars(r.proposed.settings), "twin_meets_limits": r.proposed.meets_limits,
        "changed": r.changed, "fixes_hypoglycaemia": r.fixes_hypoglycaemia, "recommendation": r.recommendation,
        "tir_default": round(float(times["time_in_range_70_180"][k, 0]), 3),
        "tir_proposed": round(float(times["time_in_range_70_180"][k, 1]), 3),
        "tbr70_default": round(float(times["time_below_70"][k, 0]), 4),
        "tbr70_proposed": round(float(times["time_below_70"][k, 1]), 4),
        "tbr54_proposed": round(float(times["time_below_54"][k, 1]), 4),
        "twin_tir_current": round(r.current.median["time_in_range_70_180"], 3),
        "twin_tir_proposed": round(r.proposed.median["time_in_range_70_180"], 3),
        "twin_tbr70_current_p95": round(r.current.high["time_below_70"], 4),
        "twin_tbr70_proposed_p95": round(r.proposed.high["time_below_70"], 4),
    } for k, (r, d) in enumerate(zip(results, defaults))]
    return {
        "optimiser_tir_gain_pct": round(float(tir_gain.mean() * 100), 2),
        "optimiser_tbr70_change_pct": round(float(tbr70_change.mean() * 100), 2),
        "optimiser_tir_default_pct": round(float(times["time_in_range_70_180"][:, 0].mean() * 100), 1),
        "optimiser_tir_proposed_pct": round(float(times["time_in_range_70_180"][:, 1].mean() * 100), 1),
        "optimiser_tbr70_default_pct": round(float(times["time_below_70"][:, 0].mean() * 100), 2),
        "optimiser_tbr70_proposed_pct": round(float(times["time_below_70"][:, 1].mean() * 100), 2),
        "optimiser_patients_tir_up": int((tir_gain > 0.001).sum()),
        "optimiser_patients_tir_down": int((tir_gain < -0.001).sum()),
        "optimiser_patients_tir_down_to_fix_hypo": int(((tir_gain < -0.001) & fixes).sum()),
        "optimiser_patients_tir_down_otherwise": int(((tir_gain < -0.001) & ~fixes).sum()),
        "optimiser_patients_tbr70_up": int((tbr70_change > 0.001).sum()),
        "optimiser_patients_changed": sum(r.changed for r in results),
        "optimiser_patients_fixing_hypo": int(fixes.sum()),
        "optimiser_patients_default_breaks_limits_on_twin": sum(not r.current.meets_limits for r in results),
        "optimiser_patients": len(results),
        "optimiser_held_out_days": held_out_days,
        "optimiser_members": members,
        "optimiser_s": round(time.perf_counter() - started, 1),
        "optimiser_search_s": round(optimise_s, 1),
        "optimiser_per_patient": per_patient,
    }
