"""Stability of the batched model's fixed-step integrator (RK4 at 1-minute steps, node/twins/uva_padova.py):
finite-difference Jacobians along a trajectory and RK4's amplification of every decaying mode."""

from __future__ import annotations

import numpy as np

from node.twins.parameters import N_STATES, Cohort
from node.twins.uva_padova import MG_PER_G, STEP_MIN, Scenario, insulin_u_per_min_to_pmol_per_kg_min, next_meal_size_mg, rhs

def jacobian(states, cohort: Cohort, carbs_mg_per_min, insulin_pmol_per_kg_min, meal_dose_mg, eps: float = 1e-6):
    """Finite-difference Jacobians, (patients, 13, 13)."""
    base = rhs(states, cohort, carbs_mg_per_min, insulin_pmol_per_kg_min, meal_dose_mg)
    jac = np.empty((len(cohort), N_STATES, N_STATES))
    for j in range(N_STATES):
        step = eps * np.maximum(np.abs(states[:, j]), 1.0)
        moved = states.copy()
        moved[:, j] += step
        jac[:, :, j] = (rhs(moved, cohort, carbs_mg_per_min, insulin_pmol_per_kg_min, meal_dose_mg) - base) / step[:, None]
    return jac


def rk4_amplification(z):
    """RK4's amplification factor R(z) for the test equation y' = lambda y, z = lambda h."""
    return 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24


def rk4_stability(cohort: Cohort, trajectory_states: np.ndarray, scenario: Scenario, every_min: int = 5) -> dict:
    """Eigenvalues of the Jacobian along a stored trajectory (every `every_min` minutes), checked against
    RK4's stability region at h = 1 min: `max_abs_eigenvalue_per_min` (RK4 is stable on the negative real
    axis down to -2.785/min) and `max_rk4_amplification_of_decaying_modes` (must stay <= 1: every mode that
    decays in the model decays in the integrator). Modes that grow in the model (a positive real eigenvalue
    appears briefly while the stomach empties, where k_empt rises with falling Qsto) grow in RK4 too."""
    worst_eig, worst_amp = 0.0, 0.0
    dose = np.zeros(len(cohort))
    for m in range(scenario.minutes):
        x = trajectory_states[:, m]
        dose = next_meal_size_mg(dose, x, scenario.meal_starts[:, m], scenario.carbs_g_per_min[:, m] * MG_PER_G)
        if m % every_min:
            continue
        jac = jacobian(x, cohort, scenario.carbs_g_per_min[:, m] * MG_PER_G,
                       insulin_u_per_min_to_pmol_per_kg_min(scenario.insulin_u_per_min[:, m], cohort.BW), dose)
        eig = np.linalg.eigvals(jac) * STEP_MIN
        worst_eig = max(worst_eig, float(np.abs(eig).max()))
        decaying = eig[eig.real < 0]
        if decaying.size:
            worst_amp = max(worst_amp, float(np.abs(rk4_amplification(decaying)).max()))
    return {"max_abs_eigenvalue_per_min": worst_eig, "max_rk4_amplification_of_decaying_modes": worst_amp}
