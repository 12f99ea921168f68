"""Why parameter recovery stops short: the experiments behind docs/twins.md (issue 16), reproducible.

    python -m benchmarks.twin_recovery            # about 5 min on 2 quiet cores

On the validation's virtual patients (node.twins.validation: seed 1, 3 calibration days, GuardianRT CGM,
the patient left out of its own prior), every third of the 30 for a mix of ages, the same calibration is run
with one thing changed at a time; each line is the median relative error of the fitted parameters:

- `as_benchmarked`: nothing changed;
- `unfitted_at_truth`: the parameters calibration does not fit take the patient's own values instead of the
  population medians (an oracle no real calibration has): what the mismatch of the unfitted ones costs;
- `noise_free_cgm`: the CGM readings replaced by the true interstitial glucose at the same minutes: what
  the sensor's noise and drift cost;
- `profile`: profile likelihood of kp3, Vmx and kmin on three patients: each pinned at 0.5 to 2 times its
  true value, the others refitted; the residual RMS (mg/dL) of each refit. A flat profile means the data do
  not identify the parameter; a minimum away from 1 means the data prefer a wrong value (bias).
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from node.twins.calibration import calibrate_many, recovery_errors, virtual_patient
from node.twins.twin import DAY_MIN, FITTED, PopulationPrior
from node.twins.uva_padova import patient_names

PROFILE_GRID = (0.5, 0.7, 1.0, 1.4, 2.0)


def _patients(names, seed: int):
    everyone = patient_names()
    return [virtual_patient(n, days=4, seed=seed + everyone.index(n)) for n in names]


def _median_errors(twins, patients) -> dict:
    errors = np.array([[recovery_errors(t, truth)[s] for s in FITTED] for t, (_, truth, _) in zip(twins, patients)])
    return {"median": round(float(np.median(errors)), 3),
            **{s: round(float(np.median(errors[:, i])), 3) for i, s in enumerate(FITTED)}}


def recovery_experiments(names=None, *, seed: int = 1) -> dict:
    names = list(names or patient_names()[::3])
    patients = _patients(names, seed)
    records = [r.window(0, 3 * DAY_MIN) for r, _, _ in patients]
    priors = [PopulationPrior.from_patients(exclude=[n]) for n in names]
    at_truth = [dataclasses.replace(p, base_values=dict(truth.values)) for p, (_, truth, _) in zip(priors, patients)]
    clean = []
    for record, (_, _, interstitial) in zip(records, patients):
        cgm = record.cgm_mgdl.copy()
        seen = np.isfinite(cgm)
        cgm[seen] = interstitial[: len(cgm)][seen]
        clean.append(dataclasses.replace(record, cgm_mgdl=cgm))
    return {"patients": names,
            "as_benchmarked": _median_errors(calibrate_many(records, priors=priors), patients),
            "unfitted_at_truth": _median_errors(calibrate_many(records, priors=at_truth), patients),
            "noise_free_cgm": _median_errors(calibrate_many(clean, priors=priors), patients)}


def profiles(names=("adult#001", "adolescent#003", "child#003"), symbols=("kp3", "Vmx", "kmin"), *,
             seed: int = 1, grid=PROFILE_GRID) -> dict:
    """Residual RMS (mg/dL) with each symbol pinned at grid x its true value (a prior of sd 1e-4 there)."""
    records, priors, keys = [], [], []
    for name, (record, truth, _) in zip(names, _patients(names, seed)):
        base = PopulationPrior.from_patients(exclude=[name])
        for symbol in symbols:
            j = FITTED.index(symbol)
            for factor in grid:
                mean, cov = base.mean_log.copy(), base.cov_log.copy()
                mean[j] = math.log(truth.values[symbol] * factor)
                cov[j, :], cov[:, j] = 0.0, 0.0
                cov[j, j] = 1e-8
                priors.append(dataclasses.replace(base, mean_log=mean, cov_log=cov))
                records.append(record.window(0, 3 * DAY_MIN))
                keys.append((name, symbol))
    twins = calibrate_many(records, priors=priors)
    out: dict = {}
    for (name, symbol), twin in zip(keys, twins):
        out.setdefault(name, {}).setdefault(symbol, []).append(round(twin.residual_sd_mgdl, 2))
    return {"grid": list(grid), "residual_rms_mgdl": out}


if __name__ == "__main__":
    print(json.dumps({**recovery_experiments(), "profile": profiles()}))
