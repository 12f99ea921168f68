"""The UVA/Padova type 1 diabetes model (academic version, 13 states), batched over a cohort of patients.

Written from the publications, not from any simulator package:

- C. Dalla Man, R. A. Rizza, C. Cobelli, "Meal simulation model of the glucose-insulin system",
  IEEE Trans Biomed Eng 54(10):1740-1749, 2007 (gastro-intestinal tract with the nonlinear gastric
  emptying k_empt, glucose and insulin kinetics, endogenous production, utilisation, renal excretion);
- B. P. Kovatchev, M. Breton, C. Dalla Man, C. Cobelli, "In silico preclinical trials: a proof of concept
  in closed-loop control of type 1 diabetes", J Diabetes Sci Technol 3(1):44-55, 2009 (the type 1 model:
  subcutaneous insulin in two compartments, no endogenous insulin secretion, subcutaneous glucose);
- C. Dalla Man, F. Micheletto, D. Lv, M. Breton, B. Kovatchev, C. Cobelli, "The UVA/PADOVA type 1
  diabetes simulator: new features", J Diabetes Sci Technol 8(1):26-34, 2014 (NOT implemented here:
  glucagon kinetics and secretion, the hypoglycaemia-dependent increase of insulin action; see docs/twins.md).

The 30 in-silico patients' parameter sets come with simglucose (Copyright (c) 2017 Jinyu Xie, MIT),
shipped as package data in node/twins/data/uva-padova/ (node/twins/parameters.py reads them).

States (index: symbol, unit), for one patient; a cohort holds them as an array of shape (patients, 13):

     0 Qsto1  stomach, solid phase                         mg
     1 Qsto2  stomach, liquid phase (triturated)           mg
     2 Qgut   gut (intestine)                              mg
     3 Gp     glucose in plasma and fast tissues           mg/kg
     4 Gt     glucose in slowly equilibrating tissues      mg/kg
     5 Ip     insulin in plasma                            pmol/kg
     6 X      insulin action on glucose utilisation        pmol/L
     7 I1     delayed insulin for production, 1st stage    pmol/L
     8 Id     delayed insulin for production, 2nd stage    pmol/L
     9 Il     insulin in the liver                         pmol/kg
    10 Isc1   subcutaneous insulin, non-monomeric          pmol/kg
    11 Isc2   subcutaneous insulin, monomeric              pmol/kg
    12 Gs     subcutaneous (interstitial) glucose          mg/kg  (divide by Vg for mg/dL)

Inputs, per minute: carbohydrate ingestion (mg/min, from g) and subcutaneous insulin infusion
(pmol/kg/min, from U/min and body weight: 1 U = 6000 pmol).

Equations (t in minutes):

    Gastro-intestinal tract
      dQsto1/dt = -kmax Qsto1 + meal_mg_per_min
      dQsto2/dt =  kmax Qsto1 - k_empt(Qsto) Qsto2
      dQgut/dt  =  k_empt(Qsto) Qsto2 - kabs Qgut
      Ra        =  f kabs Qgut / BW                                        mg/kg/min
      k_empt(Qsto) = kmin + (kmax - kmin)/2 [tanh(alpha (Qsto - b D)) - tanh(beta (Qsto - d D)) + 2]
      alpha = 5 / (2 D (1 - b)),  beta = 5 / (2 D d),  Qsto = Qsto1 + Qsto2,
      D = amount in the stomach when the current meal started + the carbohydrate eaten since (mg),
      counting the current minute's: D grows while the patient eats and holds once they stop (the rule of
      the reference implementation, see docs/twins.md); before any meal (D = 0), k_empt = kmax.
    Glucose
      EGP  = max(0, kp1 - kp2 Gp - kp3 Id)                                 mg/kg/min
      Uid  = (Vm0 + Vmx X) Gt / (Km0 + Gt)                                 mg/kg/min
      E    = ke1 (Gp - ke2) if Gp > ke2 else 0                             mg/kg/min (renal)
      dGp/dt = EGP + Ra - Fsnc - E - k1 Gp + k2 Gt
      dGt/dt = -Uid + k1 Gp - k2 Gt
      plasma glucose G = Gp / Vg                                           mg/dL
    Insulin
      dIp/dt  = -(m2 + m4) Ip + m1 Il + ka1 Isc1 + ka2 Isc2
      dIl/dt  = -(m1 + m30) Il + m2 Ip
      I = Ip / Vi                                                          pmol/L
      dX/dt   = -p2u X + p2u (I - Ib)
      dI1/dt  = -ki (I1 - I)
      dId/dt  = -ki (Id - I1)
      dIsc1/dt = insulin_pmol_per_kg_min - (kd + ka1) Isc1
      dIsc2/dt = kd Isc1 - ka2 Isc2
    Subcutaneous glucose (what a CGM sensor sees)
      dGs/dt  = -ksc Gs + ksc Gp,   CGM glucose = Gs / Vg                  mg/dL

Non-negativity: a mass state already at or below zero does not decrease further (as in the published
simulator code), which never triggers in physiological runs.

Integrator: classical Runge-Kutta (RK4) at fixed 1-minute steps, inputs held constant over each minute.
Stability: along a meal-and-bolus day of all 30 patients the largest |eigenvalue| of the Jacobian is
1.24 /min (the gut's kabs of one adolescent), inside RK4's real stability interval |lambda h| < 2.78 at
h = 1 min, and every decaying mode has |R(lambda h)| <= 1 (see node/twins/stability.py `rk4_stability`, checked by the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from node.twins.parameters import (
    DATA_DIR, MODEL_PARAMETERS, N_STATES, PARAMETER_UNITS, PMOL_PER_U, STATE_NAMES, Cohort, PatientParameters,
    basal_rate_u_per_h, load_patient, patient_names,
)

MG_PER_G = 1000.0
STEP_MIN = 1.0
# How fast a meal is eaten when nothing says otherwise: the reference simulator's EAT_RATE (simglucose,
# T1DPatient.EAT_RATE = 5 g/min): a 50 g meal takes 10 minutes, 100 g 20 minutes.
DEFAULT_EATING_RATE_G_PER_MIN = 5.0


# ---------------------------------------------------------------------------------------------------------
# Inputs


def eat_meals(carbs_g, eating_rate_g_per_min=None) -> np.ndarray:
    """Carbohydrate per minute (g/min) from meals recorded at their first minute (g), each eaten at its
    eating rate: `eating_rate_g_per_min` scalar or per minute like carbs_g (the rate of the meal recorded in
    that minute; NaN, 0 or None: DEFAULT_EATING_RATE_G_PER_MIN). A meal of G g at r g/min is eaten as
    r, r, ..., and the remainder in its last minute (as the reference does); overlapping meals add up."""
    carbs_g = np.atleast_2d(np.asarray(carbs_g, dtype=float))
    if eating_rate_g_per_min is None:
        rate = np.full(carbs_g.shape, DEFAULT_EATING_RATE_G_PER_MIN)
    else:
        rate = np.broadcast_to(np.asarray(eating_rate_g_per_min, dtype=float), carbs_g.shape)
        rate = np.where(np.isfinite(rate) & (rate > 0), rate, DEFAULT_EATING_RATE_G_PER_MIN)
    out = np.zeros_like(carbs_g)
    minutes = carbs_g.shape[1]
    longest = int(np.ceil((carbs_g / rate).max(initial=0.0) - 1e-9))
    for k in range(min(longest, minutes)):
        piece = np.clip(carbs_g - k * rate, 0.0, rate)
        out[:, k:] += piece[:, : minutes - k]
    return out


def insulin_u_per_min_to_pmol_per_kg_min(insulin_u_per_min, body_weight_kg):
    return np.asarray(insulin_u_per_min) * PMOL_PER_U / np.asarray(body_weight_kg)


@dataclass
class Scenario:
    """Inputs of a cohort, minute by minute, each of shape (patients, minutes): carbohydrate eaten in each
    minute (g/min) and subcutaneous insulin delivered in each minute (U/min, basal and boluses).

    A meal is a run of consecutive minutes with carbohydrate; `meal_starts` marks each run's first minute,
    where the meal size D of gastric emptying restarts from the stomach's content (D then grows by what is
    eaten each minute). A window cut from a longer scenario keeps the longer scenario's starts (`window`),
    so a meal begun before the window continues rather than starting again."""

    carbs_g_per_min: np.ndarray
    insulin_u_per_min: np.ndarray
    meal_starts: np.ndarray | None = None

    def __post_init__(self):
        self.carbs_g_per_min = np.asarray(self.carbs_g_per_min, dtype=float)
        self.insulin_u_per_min = np.asarray(self.insulin_u_per_min, dtype=float)
        if self.carbs_g_per_min.shape != self.insulin_u_per_min.shape or self.carbs_g_per_min.ndim != 2:
            raise ValueError("carbs_g_per_min and insulin_u_per_min must both have shape (patients, minutes)")
        if (self.carbs_g_per_min < 0).any() or (self.insulin_u_per_min < 0).any():
            raise ValueError("inputs must be non-negative")
        if self.meal_starts is None:
            eating = self.carbs_g_per_min > 0
            before = np.zeros_like(eating)
            before[:, 1:] = eating[:, :-1]
            self.meal_starts = eating & ~before
        else:
            self.meal_starts = np.asarray(self.meal_starts, dtype=bool)
            if self.meal_starts.shape != self.carbs_g_per_min.shape:
                raise ValueError("meal_starts must have the shape of carbs_g_per_min")

    def window(self, first_min: int, last_min: int) -> "Scenario":
        """Minutes [first_min, last_min) of every patient; a meal begun before first_min is not restarted."""
        return Scenario(self.carbs_g_per_min[:, first_min:last_min], self.insulin_u_per_min[:, first_min:last_min],
                        self.meal_starts[:, first_min:last_min])

    @property
    def minutes(self) -> int:
        return self.carbs_g_per_min.shape[1]

    @classmethod
    def build(
        cls,
        cohort: Cohort,
        minutes: int,
        *,
        meals: list[tuple] = (),
        eating_rate_g_per_min: float = DEFAULT_EATING_RATE_G_PER_MIN,
        basal_u_per_h=None,
        boluses: list[tuple[float, float]] = (),
    ) -> "Scenario":
        """Same schedule for every patient. `meals`: (start time_min, carbs_g) or (start time_min, carbs_g,
        eating_rate_g_per_min), eaten at that rate (default `eating_rate_g_per_min`); `basal_u_per_h`:
        scalar or per patient (default: each patient's steady-state basal u2ss); `boluses`: (time_min,
        units_u, scalar or per patient), each delivered within one minute."""
        patients = len(cohort)
        carbs = np.zeros((patients, minutes))
        for meal in meals:
            start_min, carbs_g = meal[0], meal[1]
            rate = meal[2] if len(meal) > 2 else eating_rate_g_per_min
            at = np.zeros((1, minutes))
            at[0, int(start_min)] = carbs_g
            carbs += eat_meals(at, rate)
        basal = cohort.basal_rate_u_per_h if basal_u_per_h is None else basal_u_per_h
        insulin = np.zeros((patients, minutes)) + (np.broadcast_to(basal, (patients,)) / 60.0)[:, None]
        for time_min, units_u in boluses:
            insulin[:, int(time_min)] += np.broadcast_to(units_u, (patients,))
        return cls(carbs_g_per_min=carbs, insulin_u_per_min=insulin)


# ---------------------------------------------------------------------------------------------------------
# The model


def gastric_emptying_per_min(stomach_mg, meal_dose_mg, kmax, kmin, b, d):
    """k_empt (1/min) of Dalla Man 2007, vectorised; kmax where no meal has been eaten (D = 0)."""
    has_meal = meal_dose_mg > 0
    dose = np.where(has_meal, meal_dose_mg, 1.0)
    alpha = 5.0 / (2.0 * dose * (1.0 - b))
    beta = 5.0 / (2.0 * dose * d)
    k = kmin + (kmax - kmin) / 2.0 * (np.tanh(alpha * (stomach_mg - b * dose)) - np.tanh(beta * (stomach_mg - d * dose)) + 2.0)
    return np.where(has_meal, k, kmax)


def next_meal_size_mg(meal_size_mg, states, meal_starts, carbs_mg_per_min):
    """D for the coming minute: restarted from the stomach's content (Qsto1 + Qsto2) where a meal starts,
    then grown by the minute's carbohydrate (zero when not eating, so D holds between meals)."""
    restarted = np.where(meal_starts, states[..., 0] + states[..., 1], meal_size_mg)
    return restarted + carbs_mg_per_min


def rhs(states, cohort: Cohort, carbs_mg_per_min, insulin_pmol_per_kg_min, meal_dose_mg):
    """d(states)/dt for a cohort: states (patients, 13) -> (patients, 13), per minute."""
    p = cohort.arrays
    x = states
    qsto1, qsto2, qgut = x[:, 0], x[:, 1], x[:, 2]
    gp, gt, ip, x_act, i1, i_d, il, isc1, isc2, gs = (x[:, i] for i in range(3, 13))
    out = np.empty_like(x)

    k_empt = gastric_emptying_per_min(qsto1 + qsto2, meal_dose_mg, p["kmax"], p["kmin"], p["b"], p["d"])
    out[:, 0] = -p["kmax"] * qsto1 + carbs_mg_per_min
    out[:, 1] = p["kmax"] * qsto1 - k_empt * qsto2
    out[:, 2] = k_empt * qsto2 - p["kabs"] * qgut
    ra = p["f"] * p["kabs"] * qgut / p["BW"]

    egp = np.maximum(p["kp1"] - p["kp2"] * gp - p["kp3"] * i_d, 0.0)
    renal = p["ke1"] * np.maximum(gp - p["ke2"], 0.0)
    uid = (p["Vm0"] + p["Vmx"] * x_act) * gt / (p["Km0"] + gt)
    out[:, 3] = egp + ra - p["Fsnc"] - renal - p["k1"] * gp + p["k2"] * gt
    out[:, 4] = -uid + p["k1"] * gp - p["k2"] * gt

    out[:, 5] = -(p["m2"] + p["m4"]) * ip + p["m1"] * il + p["ka1"] * isc1 + p["ka2"] * isc2
    insulin_pmol_per_l = ip / p["Vi"]
    out[:, 6] = p["p2u"] * (insulin_pmol_per_l - p["Ib"] - x_act)
    out[:, 7] = -p["ki"] * (i1 - insulin_pmol_per_l)
    out[:, 8] = -p["ki"] * (i_d - i1)
    out[:, 9] = -(p["m1"] + p["m30"]) * il + p["m2"] * ip
    out[:, 10] = insulin_pmol_per_kg_min - (p["kd"] + p["ka1"]) * isc1
    out[:, 11] = p["kd"] * isc1 - p["ka2"] * isc2
    out[:, 12] = p["ksc"] * (gp - gs)

    # Mass states at or below zero do not decrease further.
    for i in (3, 4, 5, 9, 10, 11, 12):
        np.copyto(out[:, i], 0.0, where=(x[:, i] < 0) & (out[:, i] < 0))
    return out


@dataclass
class Trajectories:
    """Outputs at every minute 0..minutes, each of shape (patients, minutes + 1)."""

    time_min: np.ndarray
    plasma_glucose_mgdl: np.ndarray
    subcutaneous_glucose_mgdl: np.ndarray
    plasma_insulin_pmol_per_l: np.ndarray
    states: np.ndarray | None = None  # (patients, minutes + 1, 13) if asked for
    final_states: np.ndarray | None = None  # (patients, 13)
    final_meal_dose_mg: np.ndarray | None = None  # (patients,) D of the meal being emptied, to continue a run
    # (with the scenario's `window`, which keeps a meal begun earlier from restarting)


def simulate(cohort: Cohort, scenario: Scenario, minutes: int | None = None, *, initial_states=None,
             keep_states: bool = False, initial_meal_dose_mg=None) -> Trajectories:
    """Integrate the cohort over `minutes` (default: the scenario's length) with RK4 at 1-minute steps,
    all patients at once. Starts from each patient's basal steady state unless `initial_states` is given.
    To continue a run in pieces, pass the previous piece's `final_states` and `final_meal_dose_mg` (the D
    of a meal still being emptied) and cut the pieces with `Scenario.window`."""
    minutes = scenario.minutes if minutes is None else int(minutes)
    if minutes > scenario.minutes or scenario.carbs_g_per_min.shape[0] != len(cohort):
        raise ValueError("the scenario must cover the cohort and at least `minutes` minutes")
    x = (cohort.initial_states if initial_states is None else np.array(initial_states, dtype=float)).copy()
    patients = len(cohort)
    bw = cohort.body_weight_kg
    vg, vi = cohort.Vg, cohort.Vi
    glucose = np.empty((patients, minutes + 1))
    cgm = np.empty((patients, minutes + 1))
    insulin = np.empty((patients, minutes + 1))
    states = np.empty((patients, minutes + 1, N_STATES)) if keep_states else None

    def record(m):
        glucose[:, m] = x[:, 3] / vg
        cgm[:, m] = x[:, 12] / vg
        insulin[:, m] = x[:, 5] / vi
        if keep_states:
            states[:, m] = x

    meal_dose_mg = np.zeros(patients) if initial_meal_dose_mg is None else np.broadcast_to(
        np.asarray(initial_meal_dose_mg, dtype=float), (patients,)).copy()
    carbs_mg = scenario.carbs_g_per_min * MG_PER_G
    insulin_pmol = insulin_u_per_min_to_pmol_per_kg_min(scenario.insulin_u_per_min, bw[:, None])
    starts = scenario.meal_starts
    h = STEP_MIN
    record(0)
    for m in range(minutes):
        meal_dose_mg = next_meal_size_mg(meal_dose_mg, x, starts[:, m], carbs_mg[:, m])
        u_carbs, u_ins = carbs_mg[:, m], insulin_pmol[:, m]
        k1 = rhs(x, cohort, u_carbs, u_ins, meal_dose_mg)
        k2 = rhs(x + (h / 2) * k1, cohort, u_carbs, u_ins, meal_dose_mg)
        k3 = rhs(x + (h / 2) * k2, cohort, u_carbs, u_ins, meal_dose_mg)
        k4 = rhs(x + h * k3, cohort, u_carbs, u_ins, meal_dose_mg)
        x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        record(m + 1)
    return Trajectories(time_min=np.arange(minutes + 1, dtype=float), plasma_glucose_mgdl=glucose,
                        subcutaneous_glucose_mgdl=cgm, plasma_insulin_pmol_per_l=insulin, states=states,
                        final_states=x, final_meal_dose_mg=meal_dose_mg)


# ---------------------------------------------------------------------------------------------------------
# Reference: one patient at a time with scipy's adaptive solve_ivp (for the tests and the benchmark).


def rhs_one_patient(t, x, p: dict, carbs_mg_per_min: float, insulin_pmol_per_kg_min: float, meal_dose_mg: float):
    """The same equations written out for a single patient with Python floats (as a per-patient simulator
    would), used as the independent reference for the batched integrator."""
    qsto1, qsto2, qgut, gp, gt, ip, x_act, i1, i_d, il, isc1, isc2, gs = x
    qsto = qsto1 + qsto2
    if meal_dose_mg > 0:
        alpha = 5.0 / (2.0 * meal_dose_mg * (1.0 - p["b"]))
        beta = 5.0 / (2.0 * meal_dose_mg * p["d"])
        k_empt = p["kmin"] + (p["kmax"] - p["kmin"]) / 2.0 * (
            math.tanh(alpha * (qsto - p["b"] * meal_dose_mg)) - math.tanh(beta * (qsto - p["d"] * meal_dose_mg)) + 2.0)
    else:
        k_empt = p["kmax"]
    ra = p["f"] * p["kabs"] * qgut / p["BW"]
    egp = max(p["kp1"] - p["kp2"] * gp - p["kp3"] * i_d, 0.0)
    renal = p["ke1"] * (gp - p["ke2"]) if gp > p["ke2"] else 0.0
    uid = (p["Vm0"] + p["Vmx"] * x_act) * gt / (p["Km0"] + gt)
    insulin = ip / p["Vi"]
    dx = [
        -p["kmax"] * qsto1 + carbs_mg_per_min,
        p["kmax"] * qsto1 - k_empt * qsto2,
        k_empt * qsto2 - p["kabs"] * qgut,
        egp + ra - p["Fsnc"] - renal - p["k1"] * gp + p["k2"] * gt,
        -uid + p["k1"] * gp - p["k2"] * gt,
        -(p["m2"] + p["m4"]) * ip + p["m1"] * il + p["ka1"] * isc1 + p["ka2"] * isc2,
        -p["p2u"] * x_act + p["p2u"] * (insulin - p["Ib"]),
        -p["ki"] * (i1 - insulin),
        -p["ki"] * (i_d - i1),
        -(p["m1"] + p["m30"]) * il + p["m2"] * ip,
        insulin_pmol_per_kg_min - (p["kd"] + p["ka1"]) * isc1,
        p["kd"] * isc1 - p["ka2"] * isc2,
        -p["ksc"] * gs + p["ksc"] * gp,
    ]
    for i in (3, 4, 5, 9, 10, 11, 12):
        if x[i] < 0 and dx[i] < 0:
            dx[i] = 0.0
    return dx


def simulate_one_patient_solve_ivp(patient: PatientParameters, carbs_g_per_min, insulin_u_per_min,
                                   minutes: int | None = None, *, rtol: float = 1e-8, atol: float = 1e-8,
                                   method: str = "RK45", initial_states=None):
    """Plasma glucose (mg/dL) at minutes 0..minutes for one patient, integrated with scipy's solve_ivp over
    each stretch of constant input (a new stretch at every change of input), to tight tolerances."""
    from scipy.integrate import solve_ivp

    carbs = np.asarray(carbs_g_per_min, dtype=float)
    insulin = np.asarray(insulin_u_per_min, dtype=float)
    minutes = len(carbs) if minutes is None else int(minutes)
    starts = Scenario(carbs[None, :minutes], insulin[None, :minutes]).meal_starts[0]
    p = patient.values
    carbs_mg = carbs * MG_PER_G
    insulin_pmol = insulin * PMOL_PER_U / p["BW"]
    changes = [0] + [m for m in range(1, minutes)
                     if carbs_mg[m] != carbs_mg[m - 1] or insulin_pmol[m] != insulin_pmol[m - 1] or carbs_mg[m] > 0]
    changes.append(minutes)
    x = np.array(patient.initial_states if initial_states is None else initial_states, dtype=float)
    glucose = np.empty(minutes + 1)
    glucose[0] = x[3] / p["Vg"]
    meal_dose_mg = 0.0
    for start, end in zip(changes[:-1], changes[1:]):
        meal_dose_mg = next_meal_size_mg(meal_dose_mg, x, starts[start], carbs_mg[start])
        args = (p, float(carbs_mg[start]), float(insulin_pmol[start]), meal_dose_mg)
        sol = solve_ivp(rhs_one_patient, (start, end), x, method=method, args=args, rtol=rtol, atol=atol,
                        t_eval=np.arange(start + 1, end + 1, dtype=float))
        if not sol.success:
            raise RuntimeError(sol.message)
        glucose[start + 1 : end + 1] = sol.y[3] / p["Vg"]
        x = sol.y[:, -1]
    return glucose


__all__ = [
    "Cohort", "PatientParameters", "Scenario", "Trajectories", "STATE_NAMES", "PARAMETER_UNITS", "DATA_DIR",
    "MODEL_PARAMETERS", "N_STATES", "PMOL_PER_U", "MG_PER_G", "STEP_MIN",
    "DEFAULT_EATING_RATE_G_PER_MIN", "basal_rate_u_per_h", "eat_meals", "gastric_emptying_per_min",
    "next_meal_size_mg", "insulin_u_per_min_to_pmol_per_kg_min", "load_patient", "patient_names", "rhs",
    "rhs_one_patient", "simulate", "simulate_one_patient_solve_ivp",
]
