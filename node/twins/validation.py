"""Validation of calibration and forecasting on virtual patients whose parameters are known and hidden.

Each virtual patient lives `days` days at home (calibration.virtual_patient: jittered meals, carb-counted
boluses with counting error, pump basal, CGM noise). Its twin is calibrated on the first
`calibration_days` with a prior built from the OTHER patients (leave-one-out: the patient's own parameter
set never enters its prior), then forecasts 30 and 60 minutes ahead from every `origin_every_min` of the
held-out days, using only what is known at each origin.
"""

from __future__ import annotations

import math

import numpy as np

from node.twins.calibration import calibrate_many, recovery_errors, virtual_patient
from node.twins.forecast import NUDGING_GAIN, forecast_many_origins
from node.twins.twin import DAY_MIN, PopulationPrior
from node.twins.uva_padova import patient_names


def validate(names=None, *, days: int = 4, calibration_days: int = 3, seed: int = 0, origin_every_min: int = 30,
             gain: float = NUDGING_GAIN, max_iterations: int = 15, optimiser: bool = False) -> dict:
    """With `optimiser`, also the therapy optimiser's check on the same twins (node/twins/optimiser_check.py)."""
    names = list(names or patient_names())
    if not 0 < calibration_days < days:
        raise ValueError("calibration_days must leave at least one held-out day")
    patients = [virtual_patient(n, days=days, seed=seed + i) for i, n in enumerate(names)]
    split = calibration_days * DAY_MIN
    priors = [PopulationPrior.from_patients(exclude=[n], body_weight_kg=truth.body_weight_kg)
              for n, (_, truth, _) in zip(names, patients)]
    twins = calibrate_many([record.window(0, split) for record, _, _ in patients], priors=priors,
                           max_iterations=max_iterations)
    errors, prior_errors, per_patient = [], [], []
    squared = {30: [], 60: []}
    squared_true = {30: [], 60: []}
    squared_carried = {30: [], 60: []}  # baseline: the last reading carried forward
    for twin, prior, (record, truth, true_cgm) in zip(twins, priors, patients):
        recovery = recovery_errors(twin, truth)
        errors += list(recovery.values())
        prior_only = {s: abs(math.exp(prior.mean_log[i]) - truth.values[s]) / truth.values[s]
                      for i, s in enumerate(prior.fitted)}
        prior_errors += list(prior_only.values())
        origins = list(range(split, record.minutes - 60, origin_every_min))
        predicted = forecast_many_origins(twin, record, origins, horizon_min=60, gain=gain)
        patient_rmse = {}
        for horizon in (30, 60):
            target = np.array([record.cgm_mgdl[o + horizon] for o in origins])
            seen = np.isfinite(target)
            err = predicted[:, horizon][seen] - target[seen]
            squared[horizon] += list(err**2)
            last = np.array([_last_reading(record.cgm_mgdl, o) for o in origins])
            carried = np.isfinite(last) & seen
            squared_carried[horizon] += list((last[carried] - target[carried]) ** 2)
            squared_true[horizon] += list((predicted[:, horizon] - true_cgm[np.array(origins) + horizon]) ** 2)
            patient_rmse[horizon] = float(np.sqrt(np.mean(err**2)))
        per_patient.append({"patient": twin.patient_id, "recovery_error": {k: round(v, 3) for k, v in recovery.items()},
                            "prior_only_error": {k: round(v, 3) for k, v in prior_only.items()},
                            "rmse_30min_mgdl": round(patient_rmse[30], 1), "rmse_60min_mgdl": round(patient_rmse[60], 1),
                            "residual_sd_mgdl": round(twin.residual_sd_mgdl, 1), "iterations": twin.iterations})
    errors_by_parameter = np.array(errors).reshape(len(twins), -1)
    prior_by_parameter = np.array(prior_errors).reshape(len(twins), -1)
    checked = {}
    if optimiser:
        from node.twins.optimiser_check import optimiser_check

        checked = optimiser_check(twins, [record.window(0, split) for record, _, _ in patients],
                                  [truth for _, truth, _ in patients], seed=seed)
    return {
        **checked,
        "patients": len(twins),
        "calibration_days": calibration_days,
        "held_out_days": days - calibration_days,
        "fitted": list(twins[0].fitted),
        "param_recovery_error": round(float(np.median(errors)), 3),
        "param_recovery_error_by_parameter": {s: round(float(np.median(errors_by_parameter[:, i])), 3)
                                              for i, s in enumerate(twins[0].fitted)},
        "prior_median_recovery_error": round(float(np.median(prior_errors)), 3),
        "prior_recovery_error_by_parameter": {s: round(float(np.median(prior_by_parameter[:, i])), 3)
                                              for i, s in enumerate(twins[0].fitted)},
        "rmse_30min_mgdl": round(float(np.sqrt(np.mean(squared[30]))), 1),
        "rmse_60min_mgdl": round(float(np.sqrt(np.mean(squared[60]))), 1),
        "rmse_30min_vs_true_glucose_mgdl": round(float(np.sqrt(np.mean(squared_true[30]))), 1),
        "rmse_60min_vs_true_glucose_mgdl": round(float(np.sqrt(np.mean(squared_true[60]))), 1),
        "rmse_30min_last_value_mgdl": round(float(np.sqrt(np.mean(squared_carried[30]))), 1),
        "rmse_60min_last_value_mgdl": round(float(np.sqrt(np.mean(squared_carried[60]))), 1),
        "forecast_origins": len(squared[30]),
        "per_patient": per_patient,
    }


def _last_reading(cgm_mgdl: np.ndarray, origin_min: int, *, within_min: int = 15) -> float:
    recent = cgm_mgdl[max(0, origin_min - within_min) : origin_min + 1]
    seen = np.flatnonzero(np.isfinite(recent))
    return float(recent[seen[-1]]) if seen.size else math.nan
