"""Which model parameters can a few days of CGM, meals and insulin identify? Fisher information on virtual
patients (local, practical identifiability, as ReplayBG reports it before calibrating).

For each virtual patient (calibration.virtual_patient: its record and its true parameters), the CGM model
output at the record's reading minutes is differentiated, by central finite differences in log-parameter
space, with respect to each candidate parameter around the truth (every other parameter at its true value,
the derived ones rebuilt by `steady_state`, u2ss from the record's basal as calibration does). With a
Gaussian reading error of standard deviation sigma whose lag-1 autocorrelation rho inflates the variance
of a mean by (1 + rho)/(1 - rho), the Fisher information of log(theta) is

    F = S^T S / (sigma^2 (1 + rho)/(1 - rho)),

and sqrt(diag(F^-1)) is the Cramer-Rao bound on each parameter's relative standard error when the set is
estimated together. Parameters are chosen greedily: at each step the candidate whose addition keeps the
median (over patients) of the set's worst relative error smallest, while that stays below `max_relative_sd`.

That bound assumes every other parameter KNOWN. Calibration does not know them: it leaves them at population
medians. `identifiable_with_others_unknown` therefore asks what the data identify when every candidate is
uncertain as it is across the published patients (the Bayesian Cramer-Rao bound, Gill and Levit 1995):
posterior covariance (F + P)^-1 with P the inverse of the population covariance of log(theta) (shrunk as
the calibration prior is). A parameter is identifiable when its posterior relative sd (median over patients)
is below `max_relative_sd` AND the data at least halve its population sd (so that the prior alone, as for f,
which is 0.9 in every published patient, does not count as identification).
"""

from __future__ import annotations

import math

import numpy as np

from node.twins.parameters import PMOL_PER_U, Cohort, PatientParameters
from node.twins.twin import record_inputs
from node.twins.uva_padova import Scenario, simulate
from node.twins.steady_state import basal_steady_state, steady_state

CANDIDATES = ("Vmx", "kp3", "kabs", "Gb", "kp2", "k1", "k2", "kmax", "kmin", "p2u", "ki", "ksc", "ka1", "ka2",
              "kd", "EGPb", "Km0", "f")
READING_SD_MGDL = 10.0  # about the sensors' error around interstitial glucose (docs/twins.md)
READING_RHO = 0.6  # lag-1 autocorrelation of that error at 5 minutes


def sensitivities(records_and_truths, candidates=CANDIDATES, *, step: float = 0.01) -> list[np.ndarray]:
    """d(CGM model at the reading minutes)/d(log theta) for each (record, truth): (readings, candidates)."""
    rows, inputs, starts, meta = [], [], [], []
    for record, truth in records_and_truths:
        carbs, insulin = record_inputs(record)
        basal = float(np.median(record.basal_u_per_h))
        base = dict(truth.values)
        base["u2ss"] = basal / 60.0 * PMOL_PER_U / base["BW"]
        first = len(rows)
        for j, symbol in enumerate(candidates):
            for sign in (+1, -1):
                values = dict(base)
                values[symbol] = base[symbol] * math.exp(sign * step)
                values, _ = steady_state(values)
                rows.append(PatientParameters(truth.name, values, basal_steady_state(values, basal), 1.0, 1.0, 0.0, 0.0))
                inputs.append((carbs, insulin))
                starts.append(rows[-1].initial_states)
        readings = np.flatnonzero(np.isfinite(record.cgm_mgdl) & (record.cgm_mgdl > 40) & (record.cgm_mgdl < 400))
        meta.append((first, readings))
    out = simulate(Cohort.of(rows), Scenario(np.stack([c for c, _ in inputs]), np.stack([i for _, i in inputs])),
                   initial_states=np.stack(starts))
    glucose = out.subcutaneous_glucose_mgdl
    result = []
    for first, readings in meta:
        columns = [(glucose[first + 2 * j, readings] - glucose[first + 2 * j + 1, readings]) / (2 * step)
                   for j in range(len(candidates))]
        result.append(np.stack(columns, axis=1))
    return result


def relative_sd(sensitivity: np.ndarray, chosen, *, sd_mgdl: float = READING_SD_MGDL, rho: float = READING_RHO) -> np.ndarray:
    """Cramer-Rao relative standard errors of the `chosen` columns estimated together."""
    s = sensitivity[:, list(chosen)]
    fisher = s.T @ s / (sd_mgdl**2 * (1 + rho) / (1 - rho))
    try:
        return np.sqrt(np.clip(np.diag(np.linalg.inv(fisher)), 0, None))
    except np.linalg.LinAlgError:
        return np.full(len(chosen), np.inf)


def identifiable_set(sens: list[np.ndarray], candidates=CANDIDATES, *, max_relative_sd: float = 0.1) -> dict:
    """Greedy forward selection; returns the chosen parameters and each one's median relative sd."""
    chosen: list[int] = []
    while True:
        best, best_score = None, math.inf
        for j in range(len(candidates)):
            if j in chosen:
                continue
            worst = [relative_sd(s, chosen + [j]).max() for s in sens]
            score = float(np.median(worst))
            if score < best_score:
                best, best_score = j, score
        if best is None or best_score > max_relative_sd:
            break
        chosen.append(best)
    alone = {candidates[j]: round(float(np.median([relative_sd(s, [j])[0] for s in sens])), 4) for j in range(len(candidates))}
    joint = {}
    if chosen:
        per = np.array([relative_sd(s, chosen) for s in sens])
        joint = {candidates[j]: round(float(np.median(per[:, k])), 4) for k, j in enumerate(chosen)}
    return {"identifiable_parameters": [candidates[j] for j in chosen], "relative_sd_joint": joint,
            "relative_sd_alone": alone, "max_relative_sd": max_relative_sd}


def population_cov_log(candidates=CANDIDATES, names=None) -> np.ndarray:
    """Covariance of log(theta) over the published patients, shrunk towards its diagonal as the prior is."""
    from node.twins.parameters import load_patient, patient_names
    from node.twins.twin import PRIOR_SHRINKAGE

    logs = np.log([[load_patient(n).values[c] for c in candidates] for n in (names or patient_names())])
    cov = np.cov(logs, rowvar=False)
    return (1 - PRIOR_SHRINKAGE) * cov + PRIOR_SHRINKAGE * np.diag(np.diag(cov))


def posterior_relative_sd(sensitivity: np.ndarray, prior_cov_log: np.ndarray, *, sd_mgdl: float = READING_SD_MGDL,
                          rho: float = READING_RHO) -> np.ndarray:
    """Posterior sd of each candidate's log when all are estimated together under the population prior."""
    fisher = sensitivity.T @ sensitivity / (sd_mgdl**2 * (1 + rho) / (1 - rho))
    floor = 1e-8 * np.eye(len(prior_cov_log))  # a parameter the population never varies (f) is known
    posterior = np.linalg.inv(fisher + np.linalg.inv(prior_cov_log + floor))
    return np.sqrt(np.clip(np.diag(posterior), 0, None))


def identifiable_with_others_unknown(sens: list[np.ndarray], prior_cov_log: np.ndarray, candidates=CANDIDATES, *,
                                     max_relative_sd: float = 0.1, min_shrinkage: float = 0.5) -> dict:
    """Identifiable parameters when every candidate is only known to the population's spread (see module doc)."""
    posterior = np.median([posterior_relative_sd(s, prior_cov_log) for s in sens], axis=0)
    prior_sd = np.sqrt(np.diag(prior_cov_log))
    found = [c for j, c in enumerate(candidates)
             if posterior[j] < max_relative_sd and posterior[j] < min_shrinkage * prior_sd[j]]
    return {"identifiable_parameters_others_unknown": found,
            "posterior_relative_sd_others_unknown": {c: round(float(posterior[j]), 4) for j, c in enumerate(candidates)},
            "population_relative_sd": {c: round(float(prior_sd[j]), 4) for j, c in enumerate(candidates)}}


def identifiability(names, *, days: int = 3, seed: int = 0, candidates=CANDIDATES, max_relative_sd: float = 0.1) -> dict:
    """Fisher-information identifiability on the named virtual patients' first `days` days: with every other
    parameter known (`identifiable_parameters`) and with all at the population's spread (`..._others_unknown`)."""
    from node.twins.calibration import virtual_patient

    pairs = []
    for i, name in enumerate(names):
        record, truth, _ = virtual_patient(name, days=days + 1, seed=seed + i)
        pairs.append((record.window(0, days * 24 * 60), truth))
    sens = sensitivities(pairs, candidates)
    return {**identifiable_set(sens, candidates, max_relative_sd=max_relative_sd),
            **identifiable_with_others_unknown(sens, population_cov_log(candidates), candidates,
                                               max_relative_sd=max_relative_sd)}
