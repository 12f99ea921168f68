"""An independent check of the UVA/Padova twin: the equations written out a second time, one patient at a
time, integrated by scipy's adaptive `solve_ivp` from the published parameter table, with the meal rule of
the reference implementation.

It imports NOTHING from node.twins (a test checks this): it reads vpatient_params.csv with the csv module,
uses the table's own derived constants (kp1, Vm0, Ib, ...) and initial states, and writes the right-hand
side as simglucose does (jxx123/simglucose, simglucose/patient/t1dpatient.py, `T1DPatient.model` and
`step`; MIT), following Dalla Man et al. 2007 and Kovatchev et al. 2009:

- Meal size D of the gastric emptying function (the reference's `Dbar`): when eating starts (a minute with
  carbohydrate after a minute without), D is reset to the stomach content at that moment (Qsto1 + Qsto2,
  mg); every minute of eating then adds that minute's carbohydrate (mg) BEFORE the minute is integrated,
  so D grows while the patient eats and stays fixed once they stop. D = 0 before any meal: k_empt = kmax.
  (simglucose issue #41: early versions added grams to milligrams here; the fixed code, and this check,
  use mg.)
- Mass states (Gp, Gt, Ip, Il, Isc1, Isc2, Gs) stop moving once below zero (`(x >= 0) * dxdt`).
- Inputs per minute: carbohydrate in g/min (x 1000 -> mg/min) and insulin in U/min (x 6000 / BW ->
  pmol/kg/min), held constant over the minute.

Integration: solve_ivp (RK45 by default, rtol = atol = 1e-8) over each stretch of constant right-hand side
(a new stretch at every change of input and at every minute of eating, where D changes).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

PARAMETER_TABLE = Path(__file__).resolve().parent / "data" / "uva-padova" / "vpatient_params.csv"
_INITIAL_STATE_COLUMNS = [f"x0_{i:2d}" for i in range(1, 14)]


def published_patient(name: str, table: Path = PARAMETER_TABLE) -> tuple[dict, np.ndarray]:
    """(parameters as floats, the 13 published initial states) of one patient, straight from the table."""
    with table.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"].strip() == name:
                params = {}
                for key, value in row.items():
                    try:
                        params[key] = float(value)
                    except (TypeError, ValueError):
                        pass
                return params, np.array([float(row[c]) for c in _INITIAL_STATE_COLUMNS])
    raise KeyError(name)


def derivatives(t, x, p, carbs_mg_per_min, insulin_pmol_per_kg_min, meal_size_mg):
    """dx/dt of the 13 states of one patient (the reference's model function, written out)."""
    dx = np.zeros(13)
    qsto = x[0] + x[1]
    dx[0] = -p["kmax"] * x[0] + carbs_mg_per_min
    if meal_size_mg > 0:
        aa = 5.0 / 2.0 / (1.0 - p["b"]) / meal_size_mg
        cc = 5.0 / 2.0 / p["d"] / meal_size_mg
        kgut = p["kmin"] + (p["kmax"] - p["kmin"]) / 2.0 * (
            np.tanh(aa * (qsto - p["b"] * meal_size_mg)) - np.tanh(cc * (qsto - p["d"] * meal_size_mg)) + 2.0)
    else:
        kgut = p["kmax"]
    dx[1] = p["kmax"] * x[0] - x[1] * kgut
    dx[2] = kgut * x[1] - p["kabs"] * x[2]
    rat = p["f"] * p["kabs"] * x[2] / p["BW"]
    egpt = p["kp1"] - p["kp2"] * x[3] - p["kp3"] * x[8]
    et = p["ke1"] * (x[3] - p["ke2"]) if x[3] > p["ke2"] else 0.0
    dx[3] = max(egpt, 0.0) + rat - p["Fsnc"] - et - p["k1"] * x[3] + p["k2"] * x[4]
    uidt = (p["Vm0"] + p["Vmx"] * x[6]) * x[4] / (p["Km0"] + x[4])
    dx[4] = -uidt + p["k1"] * x[3] - p["k2"] * x[4]
    dx[5] = -(p["m2"] + p["m4"]) * x[5] + p["m1"] * x[9] + p["ka1"] * x[10] + p["ka2"] * x[11]
    it = x[5] / p["Vi"]
    dx[6] = -p["p2u"] * x[6] + p["p2u"] * (it - p["Ib"])
    dx[7] = -p["ki"] * (x[7] - it)
    dx[8] = -p["ki"] * (x[8] - x[7])
    dx[9] = -(p["m1"] + p["m30"]) * x[9] + p["m2"] * x[5]
    dx[10] = insulin_pmol_per_kg_min - (p["ka1"] + p["kd"]) * x[10]
    dx[11] = p["kd"] * x[10] - p["ka2"] * x[11]
    dx[12] = -p["ksc"] * x[12] + p["ksc"] * x[3]
    for i in (3, 4, 5, 9, 10, 11, 12):
        if x[i] < 0:
            dx[i] = 0.0
    return dx


def reference_glucose(name: str, carbs_g_per_min, insulin_u_per_min, *, initial_states=None,
                      rtol: float = 1e-8, atol: float = 1e-8, method: str = "RK45") -> dict:
    """Plasma and subcutaneous glucose (mg/dL) at minutes 0..len(inputs) of one published patient."""
    from scipy.integrate import solve_ivp

    p, x0 = published_patient(name)
    carbs_mg = np.asarray(carbs_g_per_min, dtype=float) * 1000.0
    insulin_pmol = np.asarray(insulin_u_per_min, dtype=float) * 6000.0 / p["BW"]
    minutes = len(carbs_mg)
    x = (x0 if initial_states is None else np.asarray(initial_states, dtype=float)).copy()
    plasma = np.empty(minutes + 1)
    interstitial = np.empty(minutes + 1)
    plasma[0], interstitial[0] = x[3] / p["Vg"], x[12] / p["Vg"]
    stomach_at_meal_start_mg = x[0] + x[1]
    eaten_mg = 0.0
    eating_before = False
    m = 0
    while m < minutes:
        eating = carbs_mg[m] > 0
        if eating and not eating_before:  # eating starts: D restarts from what the stomach holds now
            stomach_at_meal_start_mg = x[0] + x[1]
            eaten_mg = 0.0
        if eating:
            eaten_mg += carbs_mg[m]
        meal_size_mg = stomach_at_meal_start_mg + eaten_mg
        end = m + 1
        if not eating:  # D is fixed until eating starts again: integrate the stretch of constant input at once
            while end < minutes and carbs_mg[end] == 0 and insulin_pmol[end] == insulin_pmol[m]:
                end += 1
        sol = solve_ivp(derivatives, (m, end), x, method=method, rtol=rtol, atol=atol,
                        args=(p, carbs_mg[m], insulin_pmol[m], meal_size_mg),
                        t_eval=np.arange(m + 1, end + 1, dtype=float))
        if not sol.success:
            raise RuntimeError(f"{name}: {sol.message}")
        plasma[m + 1 : end + 1] = sol.y[3] / p["Vg"]
        interstitial[m + 1 : end + 1] = sol.y[12] / p["Vg"]
        x = sol.y[:, -1]
        eating_before = eating
        m = end
    return {"plasma_glucose_mgdl": plasma, "subcutaneous_glucose_mgdl": interstitial}


def reference_day(name: str, *, meals=((7 * 60, 50.0), (12 * 60, 70.0), (19 * 60, 80.0)),
                  eating_rate_g_per_min: float = 5.0, bolus_by_carb_ratio: dict | None = None,
                  minutes: int = 24 * 60) -> tuple[np.ndarray, np.ndarray]:
    """Per-minute inputs (carbs g/min, insulin U/min) of the check's day for one patient: three meals eaten
    at `eating_rate_g_per_min` (simglucose's EAT_RATE is 5 g/min), a bolus of carbs / CR at each meal's
    start (`bolus_by_carb_ratio`: name -> CR g/U; default the Quest.csv ratio), the patient's basal u2ss."""
    p, _ = published_patient(name)
    if bolus_by_carb_ratio is None:
        with (PARAMETER_TABLE.parent / "Quest.csv").open(newline="") as handle:
            ratio = {r["Name"].strip(): float(r["CR"]) for r in csv.DictReader(handle)}[name]
    else:
        ratio = bolus_by_carb_ratio[name]
    carbs = np.zeros(minutes)
    insulin = np.full(minutes, p["u2ss"] * p["BW"] / 6000.0)
    for start_min, grams in meals:
        left, m = grams, int(start_min)
        while left > 1e-12:
            carbs[m] += min(eating_rate_g_per_min, left)
            left -= min(eating_rate_g_per_min, left)
            m += 1
        insulin[int(start_min)] += grams / ratio
    return carbs, insulin
