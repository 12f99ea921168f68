"""Where a virtual patient rests: the basal states of a published parameter set, and the steady state under
the basal a pump actually delivers (UVA/Padova, Dalla Man et al. 2007/2014)."""

from __future__ import annotations

import numpy as np

from node.twins.parameters import PMOL_PER_U, Cohort


def steady_state(values: dict) -> tuple[dict, np.ndarray]:
    """Complete a parameter set so that the basal infusion u2ss holds the patient at Gb, as the published
    patients are built: from Gb, EGPb, u2ss and the kinetic constants derive Gpb, Gtb, Vm0, Ipb, Ib, kp1
    and the 13 basal states. Returns (values with the derived symbols replaced, initial states)."""
    p = dict(values)
    p["Gpb"] = gpb = p["Gb"] * p["Vg"]
    gtb = (p["Fsnc"] - p["EGPb"] + p["k1"] * gpb) / p["k2"]
    p["Vm0"] = (p["EGPb"] - p["Fsnc"]) * (p["Km0"] + gtb) / gtb
    p["Ipb"] = ipb = p["u2ss"] / (p["m2"] + p["m4"] - p["m1"] * p["m2"] / (p["m1"] + p["m30"]))
    p["Ib"] = ib = ipb / p["Vi"]
    p["kp1"] = p["EGPb"] + p["kp2"] * gpb + p["kp3"] * ib
    ilb = p["m2"] * ipb / (p["m1"] + p["m30"])
    isc1 = p["u2ss"] / (p["kd"] + p["ka1"])
    isc2 = p["kd"] * isc1 / p["ka2"]
    states = np.array([0.0, 0.0, 0.0, gpb, gtb, ipb, 0.0, ib, ib, ilb, isc1, isc2, gpb])
    return p, states


def basal_steady_state(values: dict, basal_u_per_h: float) -> np.ndarray:
    """The 13 states at which a patient (a complete parameter set, e.g. PatientParameters.values) stays
    under a constant basal of `basal_u_per_h` with no meal: where a virtual patient starts when the pump
    delivers its u2ss rounded to 0.05 U/h (started at the published states instead, child#004 drifts by
    -17 mg/dL over 24 h). Insulin is linear in the infusion; glucose solves
        EGP(Gp) - Fsnc - E(Gp) = Uid(Gt),   k1 Gp = Uid(Gt) + k2 Gt
    on Gt >= 0 (the first equation's left side falls and its right side rises with Gt). Raises ValueError
    if the basal is so high that no positive glucose holds (EGP at zero glucose below Fsnc)."""
    from scipy.optimize import brentq

    p = values
    u = float(basal_u_per_h) / 60.0 * PMOL_PER_U / p["BW"]
    isc1 = u / (p["kd"] + p["ka1"])
    isc2 = p["kd"] * isc1 / p["ka2"]
    ip = u / (p["m2"] + p["m4"] - p["m1"] * p["m2"] / (p["m1"] + p["m30"]))
    il = p["m2"] * ip / (p["m1"] + p["m30"])
    insulin = ip / p["Vi"]
    x_act = insulin - p["Ib"]

    def plasma(gt):
        uid = (p["Vm0"] + p["Vmx"] * x_act) * gt / (p["Km0"] + gt)
        return (uid + p["k2"] * gt) / p["k1"], uid

    def balance(gt):
        gp, uid = plasma(gt)
        egp = max(p["kp1"] - p["kp2"] * gp - p["kp3"] * insulin, 0.0)
        renal = p["ke1"] * max(gp - p["ke2"], 0.0)
        return egp - p["Fsnc"] - renal - uid

    if balance(0.0) <= 0:
        raise ValueError(f"no steady state with positive glucose at a basal of {basal_u_per_h} U/h")
    high = 1e3
    while balance(high) > 0:
        high *= 10
        if high > 1e9:
            raise ValueError(f"no steady state at a basal of {basal_u_per_h} U/h")
    gt = brentq(balance, 0.0, high, xtol=1e-12, rtol=1e-14, maxiter=500)
    gp, _ = plasma(gt)
    return np.array([0.0, 0.0, 0.0, gp, gt, ip, x_act, insulin, insulin, il, isc1, isc2, gp])


def basal_states(cohort: Cohort, basal_u_per_h) -> np.ndarray:
    """(patients, 13): each patient's `basal_steady_state` under its basal (scalar or per patient, U/h)."""
    rates = np.broadcast_to(np.asarray(basal_u_per_h, dtype=float), (len(cohort),))
    return np.stack([basal_steady_state(p.values, r) for p, r in zip(cohort.patients, rates)])
