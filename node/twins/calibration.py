"""Personalise a UVA/Padova twin to one patient's own CGM, meals and insulin (a DiabetesRecord).

Method: maximum a posteriori with population priors, then a Laplace approximation of the posterior.

- **Fitted parameters** (FITTED, node/twins/twin.py): Gb (the glucose the patient's own basal holds them
  at), kmin and kmax (gastric emptying), kp3 (hepatic insulin sensitivity), ki (delay of insulin action on
  production), k1 (plasma to tissue exchange) and Vmx (peripheral insulin sensitivity). With the other
  parameters unknown, three days identify only Gb, kmin and ki (node/twins/identifiability.py); the others
  are fitted as nuisance parameters, because left at population values their mismatch moves the rest
  (docs/twins.md, "Why recovery stops short"). Every other parameter is the population median, body
  weight comes from the record, and u2ss from the record's basal rate (the standard assumption of simulator
  cloning: the patient's basal holds them at steady state); Gpb, Gtb, Vm0, Ipb, Ib, kp1 and the basal
  states are then derived so the twin is at steady state (`steady_state.steady_state`). The twin and its prior: node/twins/twin.py.
  This follows the Bayesian cloning of Visentin, Dalla Man, Cobelli, "One-day Bayesian cloning of type 1
  diabetes subjects", IEEE TBME 63(11), 2016, with fewer free parameters (a few days of CGM with
  announced meals cannot identify more).
- **Prior**: multivariate log-normal, mean and covariance of log(theta) over the same published patients
  (the validation leaves the patient under test out), covariance shrunk 20% to its diagonal.
- **Likelihood**: CGM reading = Gs/Vg + error, Gaussian with standard deviation sigma; CGM error is
  autocorrelated, so the log-likelihood is divided by (1 + rho)/(1 - rho) (the variance inflation of an
  AR(1) mean), with sigma and the lag-1 autocorrelation rho re-estimated from the residuals once.
- **Search**: Levenberg-Marquardt in whitened coordinates z (theta = mu + L z, L L^T = prior covariance),
  finite-difference Jacobians. Each iteration is ONE batched simulation: for several damping values the
  candidate step and its d finite-difference neighbours are simulated side by side (and across patients
  when several are calibrated together), so the accepted candidate's Jacobian is already there.
- **Uncertainty**: Laplace: posterior covariance in z = (J^T J)^-1 at the MAP (Gauss-Newton Hessian
  including the prior); an ensemble is drawn from the log-normal posterior for forecasts and what-ifs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from node.twins.parameters import Cohort, PatientParameters, load_patient
from node.twins.records import DiabetesRecord
from node.twins.twin import (
    DAY_MIN, FITTED, CalibratedTwin, CalibrationError, PopulationPrior, check_record, infer_therapy,
    record_inputs, spread_meals,
)
from node.twins.uva_padova import DEFAULT_EATING_RATE_G_PER_MIN, Scenario, simulate
from node.twins.steady_state import basal_steady_state

CGM_VALID_MGDL = (40.0, 400.0)  # readings at the sensor's limits are censored: left out of the likelihood
# The twin's names are part of calibration's interface (node/twins/api.py and cli.py import them from here).
__all__ = [
    "CGM_VALID_MGDL", "DAY_MIN", "FITTED", "CalibratedTwin", "CalibrationError", "PopulationPrior",
    "calibrate", "calibrate_many", "recovery_errors", "virtual_patient", "virtual_patient_record",
]


# ---------------------------------------------------------------------------------------------------------
# The fit


@dataclass
class _Problem:
    twin: CalibratedTwin  # holds prior and therapy; map/cov filled in at the end
    carbs: np.ndarray
    insulin: np.ndarray
    first_cgm_mgdl: float
    reading_minutes: np.ndarray
    readings_mgdl: np.ndarray
    chol: np.ndarray
    sigma_mgdl: float = 15.0
    inflation: float = 10.0
    z: np.ndarray | None = None
    residuals: np.ndarray | None = None
    jacobian: np.ndarray | None = None
    cost: float = math.inf
    damping: float = 1.0
    converged: bool = False
    iterations: int = 0

    def theta(self, z):
        return self.twin.prior.mean_log + self.chol @ z


def _initial_states(patients: list[PatientParameters], first_cgm_mgdl: float) -> np.ndarray:
    """Basal steady state with the glucose compartments scaled to the first CGM reading."""
    states = np.stack([p.initial_states for p in patients])
    ratio = first_cgm_mgdl / np.array([p.values["Gb"] for p in patients])
    states[:, 3:5] *= ratio[:, None]
    states[:, 12] *= ratio
    return states


def _simulate_candidates(jobs: list[tuple[_Problem, np.ndarray]], minutes: int, twins=None) -> list[np.ndarray]:
    """Simulate every (problem, z-matrix) job in one batch; returns CGM-model residuals per job, (k, readings).
    `twins` (one per job) overrides the problem's twin, e.g. to try another reference patient."""
    patients, carbs, insulin, starts = [], [], [], []
    for k, (problem, zs) in enumerate(jobs):
        twin = twins[k] if twins else problem.twin
        found = twin.patients([problem.theta(z) for z in zs])
        patients += found
        n = len(found)
        pad = minutes - len(problem.carbs)
        carbs.append(np.repeat(np.pad(problem.carbs, (0, pad))[None, :], n, axis=0))
        basal_tail = np.full(pad, problem.insulin[-1] if len(problem.insulin) else 0.0)
        insulin.append(np.repeat(np.concatenate([problem.insulin, basal_tail])[None, :], n, axis=0))
        starts.append(_initial_states(found, problem.first_cgm_mgdl))
    cohort = Cohort.of(patients)
    out = simulate(cohort, Scenario(np.vstack(carbs), np.vstack(insulin)), initial_states=np.vstack(starts))
    residuals, row = [], 0
    for problem, zs in jobs:
        model = out.subcutaneous_glucose_mgdl[row : row + len(zs)][:, problem.reading_minutes]
        residuals.append(problem.readings_mgdl[None, :] - model)
        row += len(zs)
    return residuals


def _cost(problem: _Problem, residuals: np.ndarray, z: np.ndarray) -> float:
    scale = problem.sigma_mgdl**2 * problem.inflation
    return float(0.5 * (residuals**2).sum() / scale + 0.5 * z @ z)


def calibrate_many(records: list[DiabetesRecord], *, priors: list[PopulationPrior] | None = None,
                   max_iterations: int = 15, burn_in_min: int = 60, fd_step: float = 0.02,
                   dampings=(0.1, 1.0, 10.0), choose_reference: bool = False) -> list[CalibratedTwin]:
    """Calibrate several patients' twins together (one batched simulation per iteration for all).
    The unfitted parameters are the population medians, or with `choose_reference` those of the population
    patient that fits the record best (on the 30 virtual patients this did not lower recovery error)."""
    if not records:
        return []
    priors = priors or [PopulationPrior.from_patients(body_weight_kg=r.body_weight_kg) for r in records]
    problems = []
    for record, prior in zip(records, priors):
        check_record(record)
        therapy = infer_therapy(record)
        carbs, insulin = record_inputs(record)
        cgm = np.asarray(record.cgm_mgdl, dtype=float)
        minutes = np.arange(record.minutes)
        valid = np.isfinite(cgm) & (cgm > CGM_VALID_MGDL[0]) & (cgm < CGM_VALID_MGDL[1])
        first = float(cgm[np.flatnonzero(np.isfinite(cgm))[0]])
        use = valid & (minutes >= burn_in_min)
        twin = CalibratedTwin(record.patient_id, prior, therapy, prior.mean_log.copy(), prior.cov_log.copy(),
                              math.nan, math.nan, 0, False, calibration_minutes=record.minutes)
        problems.append(_Problem(twin, carbs, insulin, first, minutes[use], cgm[use], prior.cholesky))
    horizon = max(r.minutes for r in records)
    d = len(priors[0].fitted)
    steps = np.eye(d) * fd_step

    def neighbours(z):
        return np.vstack([z[None, :], z[None, :] + steps])

    # Reference patient: every population member as it is (its own fitted parameters, the record's body
    # weight and basal), one batch; the best by posterior cost lends the twin its unfitted parameters.
    jobs, twins = [], []
    for p in problems if choose_reference else ():
        prior = p.twin.prior
        for name, values in zip(prior.population, prior.members):
            theta = np.log([values[s] for s in prior.fitted])
            jobs.append((p, np.linalg.solve(p.chol, theta - prior.mean_log)[None, :]))
            twins.append(p.twin.with_reference(values, name))
    results = _simulate_candidates(jobs, horizon, twins) if jobs else []
    for p in problems if choose_reference else ():
        mine = [(j, t, r) for j, t, r in zip(jobs, twins, results) if j[0] is p]
        (_, z), twin, _ = min(mine, key=lambda item: _cost(p, item[2][0], item[0][1][0]))
        p.twin = twin
        p.z = z[0]
    for p in problems:
        p.z = np.zeros(d) if p.z is None else p.z
    # Iteration 0: the chosen start and its finite-difference neighbours.
    results = _simulate_candidates([(p, neighbours(p.z)) for p in problems], horizon)
    for p, r in zip(problems, results):
        _accept(p, p.z, r, fd_step)
    for iteration in range(1, max_iterations + 1):
        active = [p for p in problems if not p.converged]
        if not active:
            break
        if iteration == 4:  # re-estimate the error model once the fit is close
            for p in active:
                _update_error_model(p)
                p.cost = _cost(p, p.residuals, p.z)
        jobs = []
        for p in active:
            for factor in dampings:
                jobs.append((p, neighbours(p.z + _lm_step(p, p.damping * factor))))
        results = _simulate_candidates(jobs, horizon)
        for p in active:
            p.iterations = iteration
            tried = [(j, r) for j, r in zip(jobs, results) if j[0] is p]
            costs = [_cost(p, r[0], zs[0]) for (_, zs), r in tried]
            best = int(np.argmin(costs))
            if costs[best] < p.cost:
                improvement = (p.cost - costs[best]) / max(p.cost, 1e-12)
                step = np.linalg.norm(tried[best][0][1][0] - p.z)
                p.damping = max(p.damping * dampings[best] / 3.0, 1e-4)
                _accept(p, tried[best][0][1][0], tried[best][1], fd_step)
                if iteration > 4 and (improvement < 1e-4 or step < 1e-3):
                    p.converged = True
            else:
                p.damping *= 100.0
                if p.damping > 1e6:
                    p.converged = True
    twins = []
    for p in problems:
        j = np.vstack([p.jacobian / math.sqrt(p.sigma_mgdl**2 * p.inflation), np.eye(d)])
        cov_z = np.linalg.inv(j.T @ j)
        t = p.twin
        t.map_log = p.theta(p.z)
        t.cov_log = p.chol @ cov_z @ p.chol.T
        residual = p.residuals
        t.residual_sd_mgdl = float(np.sqrt(np.mean(residual**2)))
        t.residual_autocorrelation = _lag1(p)
        t.iterations, t.converged = p.iterations, p.converged
        twins.append(t)
    return twins


def calibrate(record: DiabetesRecord, *, prior: PopulationPrior | None = None, **options) -> CalibratedTwin:
    """Personalise a twin to one patient's record (a few days of CGM, meals, boluses and basal)."""
    return calibrate_many([record], priors=[prior] if prior else None, **options)[0]


def _accept(p: _Problem, z: np.ndarray, residuals: np.ndarray, fd_step: float) -> None:
    p.z = z
    p.residuals = residuals[0]
    # d(residual)/dz; residual = reading - model
    p.jacobian = ((residuals[1:] - residuals[0][None, :]) / fd_step).T
    p.cost = _cost(p, p.residuals, z)


def _lm_step(p: _Problem, damping: float) -> np.ndarray:
    scale = math.sqrt(p.sigma_mgdl**2 * p.inflation)
    j = np.vstack([p.jacobian / scale, np.eye(len(p.z))])
    f = np.concatenate([p.residuals / scale, p.z])
    return -np.linalg.solve(j.T @ j + damping * np.eye(len(p.z)), j.T @ f)


def _lag1(p: _Problem) -> float:
    r = p.residuals - p.residuals.mean()
    adjacent = np.diff(p.reading_minutes) <= 10  # consecutive readings of one sensor, not across a gap
    if adjacent.sum() < 10 or r.var() == 0:
        return 0.0
    return float(np.corrcoef(r[:-1][adjacent], r[1:][adjacent])[0, 1])


def _update_error_model(p: _Problem) -> None:
    p.sigma_mgdl = max(float(np.sqrt(np.mean(p.residuals**2))), 5.0)
    rho = min(max(_lag1(p), 0.0), 0.98)
    p.inflation = min((1 + rho) / (1 - rho), 50.0)


# ---------------------------------------------------------------------------------------------------------
# Virtual patients with known parameters, for validation (and demos)


# (time of day min, spread min, carbs g low, high, probability)
MEAL_PLAN = ((7 * 60, 30, 40, 70, 1.0), (12 * 60 + 30, 30, 50, 90, 1.0), (16 * 60, 30, 10, 30, 0.5),
             (19 * 60, 45, 50, 100, 1.0))


def sample_meals(days: int, rng: np.random.Generator, *,
                 carb_count_error_sd: float = 0.15) -> list[tuple[int, float, float]]:
    """Meals of MEAL_PLAN over `days` days with jittered times and sizes: (minute, grams eaten, grams as the
    patient counted them, with a relative carb-counting error of sd `carb_count_error_sd`)."""
    meals = []
    for day in range(days):
        for time_min, spread_min, low_g, high_g, probability in MEAL_PLAN:
            if rng.random() > probability:
                continue
            start = day * DAY_MIN + time_min + int(rng.integers(-spread_min, spread_min + 1))
            grams = float(round(rng.uniform(low_g, high_g)))
            meals.append((start, grams, grams * max(0.3, 1 + carb_count_error_sd * rng.standard_normal())))
    return meals


def virtual_patient_record(name: str, **options) -> tuple[DiabetesRecord, PatientParameters]:
    """(record, true parameters) of `virtual_patient`."""
    record, truth, _ = virtual_patient(name, **options)
    return record, truth


def virtual_patient(name: str, *, days: int = 4, seed: int = 0, sensor: str = "GuardianRT",
                    carb_count_error_sd: float = 0.15,
                    eating_rate_g_per_min: float = DEFAULT_EATING_RATE_G_PER_MIN,
                    ) -> tuple[DiabetesRecord, PatientParameters, np.ndarray]:
    """Several days of one virtual patient at home: meals with jittered times and sizes eaten at
    `eating_rate_g_per_min` (recorded with each meal), a bolus of estimated carbs / CR (carb-counting error
    carb_count_error_sd) through an Insulet pump, the pump's basal (the patient starts at the steady state
    of that rounded basal), CGM readings with the sensor's noise. Returns (record, true parameters, true
    interstitial glucose in mg/dL at every minute)."""
    from node.twins.devices import CGMSensor, InsulinPump

    patient = load_patient(name)
    rng = np.random.default_rng(seed)
    minutes = days * DAY_MIN
    pump = InsulinPump.load("Insulet")
    carbs_g = np.zeros(minutes)
    bolus_u = np.zeros(minutes)
    for start, grams, counted in sample_meals(days, rng, carb_count_error_sd=carb_count_error_sd):
        carbs_g[start] += grams
        bolus_u[start] += float(pump.bolus_u(counted / patient.carb_ratio_g_per_u))
    basal = float(pump.basal_u_per_h(patient.basal_rate_u_per_h))
    cohort = Cohort.of([patient])
    rate = np.where(carbs_g > 0, eating_rate_g_per_min, np.nan)
    scenario = Scenario(spread_meals(carbs_g, rate), (bolus_u + basal / 60.0)[None, :])
    out = simulate(cohort, scenario, initial_states=basal_steady_state(patient.values, basal)[None, :])
    cgm_sensor = CGMSensor.load(sensor)
    times, readings = cgm_sensor.read(out.subcutaneous_glucose_mgdl[:, :minutes], rng)
    cgm = np.full(minutes, np.nan)
    keep = times < minutes
    cgm[times[keep].astype(int)] = readings[0][keep]
    record = DiabetesRecord(patient_id=name, start=datetime(2026, 1, 5, tzinfo=timezone.utc), cgm_mgdl=cgm,
                            carbs_g=carbs_g, bolus_u=bolus_u, basal_u_per_h=np.full(minutes, basal),
                            body_weight_kg=patient.body_weight_kg, eating_rate_g_per_min=rate)
    return record, patient, out.subcutaneous_glucose_mgdl[0, :minutes]


def recovery_errors(twin: CalibratedTwin, truth: PatientParameters) -> dict[str, float]:
    """|estimate - truth| / truth of each fitted parameter."""
    return {s: abs(math.exp(twin.map_log[i]) - truth.values[s]) / truth.values[s] for i, s in enumerate(twin.fitted)}
