"""Glucose over the next hours from a calibrated twin's current state, with bands from its posterior.

State estimation: the twin's ensemble (the MAP and draws from the Laplace posterior) is run over the
recent history of the patient's record (24 h by default, from basal steady state scaled to the first CGM
reading) with every recorded meal, bolus and basal, and nudged towards each CGM reading as it arrives:
at a reading y, with model CGM g = Gs/Vg and innovation e = y - g,

    Gs += k e Vg,   Gp += k e Vg,   Gt += k e Vg Gt/Gp          (constant gain k, NUDGING_GAIN)

A constant-gain observer (nudging) rather than an ensemble Kalman filter: CGM observes one state through
autocorrelated noise; the unobserved disturbances that matter (carbohydrate counting errors, the twin's
structural mismatch) show up as a glucose offset, which a gain on the glucose compartments corrects
without letting noise leak into the insulin states; it is deterministic, costs nothing over the batched
run, and its one gain was chosen on virtual patients (docs/twins.md). Forecasts use only what is known at
their origin: inputs recorded up to it (a meal already announced is still being eaten and absorbed) and
the basal rate in effect, plus any plan the caller adds (`planned_carbs_g`, `planned_bolus_u`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from node.twins.records import DiabetesRecord
from node.twins.twin import CalibratedTwin, spread_meals
from node.twins.uva_padova import Cohort, Scenario, simulate

NUDGING_GAIN = 0.6
HISTORY_MIN = 24 * 60


@dataclass
class StateEstimate:
    cohort: Cohort  # one row per ensemble member
    theta_logs: np.ndarray  # (members, d)
    minutes: list[int]  # record minutes at which states were kept
    states: np.ndarray  # (len(minutes), members, 13)
    meal_dose_mg: np.ndarray  # (len(minutes), members)


def _scenario_slice(full: Scenario, first: int, last: int) -> Scenario:
    return full.window(first, last)  # a meal begun before `first` keeps its own D


def estimate_states(twin: CalibratedTwin, record: DiabetesRecord, *, at_minutes, theta_logs=None,
                    history_min: int = HISTORY_MIN, gain: float = NUDGING_GAIN) -> StateEstimate:
    """The ensemble's states at each of `at_minutes` (record minutes, the reading at that minute included),
    from one run that starts `history_min` before the first of them."""
    at_minutes = sorted(int(m) for m in at_minutes)
    if not at_minutes or at_minutes[0] < 0 or at_minutes[-1] > record.minutes:
        raise ValueError(f"state minutes must lie within the record's {record.minutes} minutes")
    theta_logs = np.atleast_2d(twin.map_log if theta_logs is None else theta_logs)
    cohort = twin.cohort(theta_logs)
    members = len(cohort)
    first = max(0, at_minutes[0] - history_min)
    cgm = np.asarray(record.cgm_mgdl, dtype=float)
    readings = [m for m in np.flatnonzero(np.isfinite(cgm)) if first <= m <= at_minutes[-1]]
    if not readings:
        raise ValueError("no CGM reading in the history before the forecast")
    carbs = spread_meals(record.carbs_g, record.eating_rate_g_per_min)[0]
    insulin = np.asarray(record.bolus_u, dtype=float) + np.asarray(record.basal_u_per_h, dtype=float) / 60.0
    full = Scenario(np.repeat(carbs[None, first:], members, 0), np.repeat(insulin[None, first:], members, 0),
                    np.repeat(Scenario(carbs[None, :], insulin[None, :]).meal_starts[:, first:], members, 0))

    x = np.stack([p.initial_states for p in cohort.patients])
    ratio = cgm[readings[0]] / cohort.Gb
    x[:, 3:5] *= ratio[:, None]
    x[:, 12] *= ratio
    dose = np.zeros(members)
    vg = cohort.Vg
    keep = set(at_minutes)
    kept_states, kept_doses = [], []
    now = first
    for boundary in sorted(set(readings) | keep):
        if boundary > now:
            out = simulate(cohort, _scenario_slice(full, now - first, boundary - first), initial_states=x,
                           initial_meal_dose_mg=dose)
            x, dose, now = out.final_states, out.final_meal_dose_mg, boundary
        if boundary < record.minutes and np.isfinite(cgm[boundary]):
            innovation_mg_per_kg = gain * (cgm[boundary] - x[:, 12] / vg) * vg
            share = x[:, 4] / np.maximum(x[:, 3], 1e-9)
            x = x.copy()
            x[:, 12] = np.maximum(x[:, 12] + innovation_mg_per_kg, 0.0)
            x[:, 3] = np.maximum(x[:, 3] + innovation_mg_per_kg, 0.0)
            x[:, 4] = np.maximum(x[:, 4] + innovation_mg_per_kg * share, 0.0)
        if boundary in keep:
            kept_states.append(x.copy())
            kept_doses.append(dose.copy())
    return StateEstimate(cohort, theta_logs, at_minutes, np.array(kept_states), np.array(kept_doses))


# How far before a forecast's origin to look for a meal still being eaten: 500 g (the largest intake a
# record may hold) at 2 g/min. Only the carbohydrate is read from there; the simulation starts at the origin.
MEAL_LOOKBACK_MIN = 250


def known_inputs(record: DiabetesRecord, origin_min: int, horizon_min: int, *, planned_carbs_g=None,
                 planned_bolus_u=None, basal_u_per_h: float | None = None) -> Scenario:
    """The one-row scenario over [origin, origin + horizon) from what is known at the origin: meals (each at
    its recorded eating rate) and boluses recorded up to it, the basal rate in effect (or `basal_u_per_h`),
    plus a plan. A meal still being eaten at the origin goes on (its start is not repeated there)."""
    lookback = MEAL_LOOKBACK_MIN
    first = max(0, origin_min - lookback)
    carbs_g = np.zeros(origin_min - first + horizon_min)
    rate = np.full(len(carbs_g), np.nan)
    seen = min(origin_min + 1, record.minutes)
    carbs_g[: seen - first] = record.carbs_g[first:seen]
    if record.eating_rate_g_per_min is not None:
        rate[: seen - first] = record.eating_rate_g_per_min[first:seen]
    bolus_u = np.zeros(horizon_min)
    if origin_min < record.minutes:
        bolus_u[0] = record.bolus_u[origin_min]
    if planned_carbs_g is not None:
        carbs_g[origin_min - first :] += np.asarray(planned_carbs_g, dtype=float)[:horizon_min]
    if planned_bolus_u is not None:
        bolus_u += np.asarray(planned_bolus_u, dtype=float)[:horizon_min]
    carbs = spread_meals(carbs_g, rate)
    starts = Scenario(carbs, np.zeros_like(carbs)).meal_starts[:, origin_min - first :]
    if basal_u_per_h is None:
        basal_u_per_h = float(record.basal_u_per_h[min(origin_min, record.minutes - 1)])
    return Scenario(carbs[:, origin_min - first :], (bolus_u + basal_u_per_h / 60.0)[None, :], starts)


@dataclass
class Forecast:
    patient_id: str
    origin: datetime
    time_min: np.ndarray  # (horizon + 1,) minutes after the origin
    map_mgdl: np.ndarray  # the MAP member's CGM glucose
    median_mgdl: np.ndarray
    low_mgdl: np.ndarray  # 5th percentile of the ensemble
    high_mgdl: np.ndarray  # 95th percentile
    members_mgdl: np.ndarray  # (members, horizon + 1)
    method: str = "mechanistic twin (UVA/Padova, calibrated, nudged to CGM)"


def forecast(twin: CalibratedTwin, record: DiabetesRecord, *, horizon_min: int = 120, members: int = 32,
             origin_min: int | None = None, seed: int = 0, **plan) -> Forecast:
    """Glucose (CGM, mg/dL) from `origin_min` (default: the record's end) over `horizon_min`."""
    if not 5 <= horizon_min <= 24 * 60:
        raise ValueError("horizon_min must be between 5 and 1440")
    origin_min = record.minutes if origin_min is None else int(origin_min)
    thetas = twin.ensemble_log(members, seed=seed)
    estimate = estimate_states(twin, record, at_minutes=[origin_min], theta_logs=thetas)
    known = known_inputs(record, origin_min, horizon_min, **plan)
    n = len(thetas)
    out = simulate(estimate.cohort, Scenario(np.repeat(known.carbs_g_per_min, n, 0), np.repeat(known.insulin_u_per_min, n, 0),
                                             np.repeat(known.meal_starts, n, 0)),
                   initial_states=estimate.states[0], initial_meal_dose_mg=estimate.meal_dose_mg[0])
    glucose = out.subcutaneous_glucose_mgdl
    return Forecast(
        patient_id=twin.patient_id, origin=record.start + timedelta(minutes=origin_min), time_min=out.time_min,
        map_mgdl=glucose[0], median_mgdl=np.median(glucose, axis=0), low_mgdl=np.percentile(glucose, 5, axis=0),
        high_mgdl=np.percentile(glucose, 95, axis=0), members_mgdl=glucose)


def forecast_many_origins(twin: CalibratedTwin, record: DiabetesRecord, origins_min, *, horizon_min: int = 60,
                          gain: float = NUDGING_GAIN) -> np.ndarray:
    """MAP forecasts from many origins at once (for validation): (origins, horizon + 1) CGM glucose."""
    origins = sorted(int(o) for o in origins_min)
    estimate = estimate_states(twin, record, at_minutes=origins, gain=gain)
    rows = [known_inputs(record, o, horizon_min) for o in origins]
    patients = [estimate.cohort.patients[0]] * len(origins)
    out = simulate(Cohort.of(patients),
                   Scenario(np.vstack([r.carbs_g_per_min for r in rows]), np.vstack([r.insulin_u_per_min for r in rows]),
                            np.vstack([r.meal_starts for r in rows])),
                   initial_states=estimate.states[:, 0], initial_meal_dose_mg=estimate.meal_dose_mg[:, 0])
    return out.subcutaneous_glucose_mgdl


# ---------------------------------------------------------------------------------------------------------
# The twin against a federated forecaster, on the patient's own recent history

BACKTEST_MIN = 24 * 60  # the history before the forecast origin both forecasters are scored on
POINT_HORIZON_MIN = 30  # the federated glucose forecaster's horizon (federation/tasks/glucose_forecast.py)
MIN_BACKTEST_ORIGINS = 12


@dataclass
class Backtest:
    origins: int  # forecast origins scored (every 5 minutes where both forecasters and the outcome are known)
    first_origin: datetime
    last_origin: datetime
    twin_rmse_30min_mgdl: float  # the twin's MAP member, nudged to CGM up to each origin
    federated_rmse_30min_mgdl: float


@dataclass
class PointForecast:
    method: str  # "twin" or "federated": whichever had the lower backtest RMSE
    made_at: datetime  # the twin's origin, or the federated forecaster's last CGM window
    at: datetime  # made_at + 30 min
    glucose_mgdl: float
    twin_glucose_mgdl: float  # the twin's MAP member at the twin's origin + 30 min
    federated_glucose_mgdl: float | None
    reason: str


def backtest_30min(twin: CalibratedTwin, record: DiabetesRecord, forecaster, *,
                   backtest_min: int = BACKTEST_MIN, origin_min: int | None = None) -> Backtest | None:
    """Both forecasters from the same origins in the `backtest_min` before `origin_min` (default: the record's end),
    30 minutes ahead, scored against the CGM (interpolated across gaps of at most 15 minutes, as the federated task's
    labels); None when fewer than MIN_BACKTEST_ORIGINS origins have both forecasts and an outcome.

    `forecaster` is a torch module taking the federated task's raw features (node/models_store.py Normalised).
    The twin's parameters were fitted on a window that includes this history: the comparison favours the twin."""
    from federation.tasks.glucose_forecast import forecast_mgdl, interpolate_cgm

    end = record.minutes if origin_min is None else int(origin_min)
    series = {name: np.asarray(getattr(record, name), dtype=float)[:end]
              for name in ("cgm_mgdl", "carbs_g", "bolus_u", "basal_u_per_h")}
    times, federated = forecast_mgdl(forecaster, series, horizon_min=POINT_HORIZON_MIN)
    truth = interpolate_cgm(series["cgm_mgdl"])
    keep = (times >= end - backtest_min) & (times + POINT_HORIZON_MIN < end)
    times, federated = times[keep], federated[keep]
    outcome = truth[times + POINT_HORIZON_MIN] if len(times) else np.zeros(0)
    known = np.isfinite(outcome) & np.isfinite(federated)
    times, federated, outcome = times[known], federated[known], outcome[known]
    if len(times) < MIN_BACKTEST_ORIGINS:
        return None
    twin_mgdl = forecast_many_origins(twin, record, times, horizon_min=POINT_HORIZON_MIN)[:, POINT_HORIZON_MIN]
    rmse = lambda forecast_mgdl_: float(np.sqrt(np.mean((forecast_mgdl_ - outcome) ** 2)))  # noqa: E731
    return Backtest(len(times), record.start + timedelta(minutes=int(times[0])),
                    record.start + timedelta(minutes=int(times[-1])), rmse(twin_mgdl), rmse(federated))


def latest_federated_30min(record: DiabetesRecord, forecaster, *, origin_min: int | None = None,
                           max_age_min: int = 5) -> tuple[int, float] | None:
    """(minute t, forecast of CGM at t + 30) from the federated forecaster's last window ending at the last CGM
    reading before `origin_min`; None when that reading is more than `max_age_min` old or lacks an hour of CGM."""
    from federation.tasks.glucose_forecast import FIRST_MIN, STEP_MIN, forecast_mgdl

    end = record.minutes if origin_min is None else int(origin_min)
    readings = np.flatnonzero(np.isfinite(np.asarray(record.cgm_mgdl[:end], dtype=float)))
    if not len(readings) or end - 1 - readings[-1] > max_age_min or readings[-1] < FIRST_MIN:
        return None
    last = int(readings[-1])
    offset = (last - FIRST_MIN) % STEP_MIN  # the task's windows lie every STEP_MIN minutes from FIRST_MIN: align
    series = {name: np.asarray(getattr(record, name), dtype=float)[offset : last + 1]
              for name in ("cgm_mgdl", "carbs_g", "bolus_u", "basal_u_per_h")}
    times, forecasts = forecast_mgdl(forecaster, series, horizon_min=POINT_HORIZON_MIN)
    if not len(times) or times[-1] + offset != last:
        return None
    return last, float(forecasts[-1])


def choose_point_30min(twin_forecast: Forecast, record: DiabetesRecord, backtest: Backtest | None,
                       latest: tuple[int, float] | None) -> PointForecast:
    """The 30-minute point forecast from the forecaster with the lower backtest RMSE (the twin on a tie, or when
    the federated one cannot be scored or has no current window)."""
    twin_value = float(twin_forecast.map_mgdl[min(POINT_HORIZON_MIN, len(twin_forecast.map_mgdl) - 1)])
    twin_point = dict(made_at=twin_forecast.origin, at=twin_forecast.origin + timedelta(minutes=POINT_HORIZON_MIN),
                      glucose_mgdl=twin_value, twin_glucose_mgdl=twin_value)
    federated_value = None if latest is None else latest[1]
    if backtest is None:
        return PointForecast("twin", **twin_point, federated_glucose_mgdl=federated_value,
                             reason="no federated glucose forecaster could be scored on this patient's last day")
    if latest is None:
        return PointForecast("twin", **twin_point, federated_glucose_mgdl=None,
                             reason="the federated forecaster needs a CGM reading within 5 minutes of the origin "
                                    "and the hour before it")
    scores = (f"backtest RMSE at 30 min over {backtest.origins} origins: twin {backtest.twin_rmse_30min_mgdl:.1f}, "
              f"federated {backtest.federated_rmse_30min_mgdl:.1f} mg/dL")
    if backtest.federated_rmse_30min_mgdl < backtest.twin_rmse_30min_mgdl:
        made_at = record.start + timedelta(minutes=latest[0])
        return PointForecast("federated", made_at=made_at, at=made_at + timedelta(minutes=POINT_HORIZON_MIN),
                             glucose_mgdl=latest[1], twin_glucose_mgdl=twin_value, federated_glucose_mgdl=latest[1],
                             reason=f"the federated forecaster did better: {scores}")
    return PointForecast("twin", **twin_point, federated_glucose_mgdl=latest[1],
                         reason=f"the twin did at least as well: {scores}")
