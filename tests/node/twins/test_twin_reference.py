"""The batched twin against an INDEPENDENT implementation of UVA/Padova (node/twins/reference.py: the
equations written out again, integrated by scipy's solve_ivp from the published table, with the reference's
meal rule), on the same per-minute inputs and initial states."""

import ast
from pathlib import Path

import numpy as np
import pytest

from node.twins import reference
from node.twins.uva_padova import Cohort, Scenario, patient_names, simulate

TOLERANCE_MGDL = 2.0
FAST_PATIENTS = ["adult#001", "child#001", "child#009"]  # the worst (child#001 21.9, child#009 20.8)


def test_the_reference_imports_nothing_from_the_model_it_checks():
    tree = ast.parse(Path(reference.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith(("node", "."))], imported


def test_the_reference_grows_the_meal_size_while_eating():
    # 20 g at 5 g/min from minute 10: D follows the eating, so emptying starts fast (D small) and the
    # glucose that reaches the gut in the first minutes exceeds what a whole-meal D (kmin-bound) lets through.
    carbs = np.zeros(60)
    carbs[10:14] = 5.0
    p, x0 = reference.published_patient("adult#001")
    out = reference.reference_glucose("adult#001", carbs, np.full(60, p["u2ss"] * p["BW"] / 6000.0))
    assert out["plasma_glucose_mgdl"][-1] > out["plasma_glucose_mgdl"][10]


def _worst_difference_mgdl(names):
    cohort = Cohort.load(names)
    inputs = [reference.reference_day(n) for n in names]
    scenario = Scenario(np.stack([c for c, _ in inputs]), np.stack([i for _, i in inputs]))
    batched = simulate(cohort, scenario)
    worst = {}
    for k, name in enumerate(names):
        ref = reference.reference_glucose(name, *inputs[k])
        worst[name] = max(np.abs(batched.plasma_glucose_mgdl[k] - ref["plasma_glucose_mgdl"]).max(),
                          np.abs(batched.subcutaneous_glucose_mgdl[k] - ref["subcutaneous_glucose_mgdl"]).max())
    return worst


def test_three_patients_match_the_independent_reference_over_a_day_of_meals_and_boluses():
    worst = _worst_difference_mgdl(FAST_PATIENTS)
    assert max(worst.values()) < TOLERANCE_MGDL, worst


@pytest.mark.slow  # 30 adaptive reference integrations, about 15 s
def test_all_thirty_patients_match_the_independent_reference_over_a_day_of_meals_and_boluses():
    worst = _worst_difference_mgdl(patient_names())
    assert len(worst) == 30
    assert max(worst.values()) < TOLERANCE_MGDL, {k: round(v, 2) for k, v in worst.items() if v >= TOLERANCE_MGDL}
