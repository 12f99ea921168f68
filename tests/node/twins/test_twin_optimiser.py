"""Therapy optimisation on a twin (node/twins/optimiser.py): the bolus calculator it simulates, the range
times it scores, and a search that must bring an over-insulinised therapy within the hypoglycaemia limits."""

import math

import numpy as np
import pytest

from node.twins.calibration import virtual_patient_record
from node.twins.optimiser import (
    TBR54_LIMIT, TBR70_LIMIT, TherapySettings, dose_and_simulate, optimise_therapy, range_times,
)
from node.twins.parameters import load_patient
from node.twins.twin import DAY_MIN, FITTED, CalibratedTwin, PopulationPrior, infer_therapy

PATIENT = "adolescent#002"


def test_range_times_on_hand_made_traces():
    trace = np.array([[50.0, 60.0, 70.0, 180.0, 181.0, 100.0, 100.0, 100.0, 100.0, 100.0],
                      [np.nan] + [100.0] * 9])
    times = range_times(trace)
    assert times["time_in_range_70_180"][0] == pytest.approx(0.7)  # 70 and 180 are in range
    assert times["time_below_70"][0] == pytest.approx(0.2) and times["time_below_54"][0] == pytest.approx(0.1)
    assert all(math.isnan(v[1]) for v in times.values())  # a refused plan's NaN row scores NaN


def test_the_bolus_calculator_doses_more_with_a_stronger_carb_ratio_and_starts_at_the_basal_steady_state():
    patient = load_patient(PATIENT)
    meals = np.zeros((3, 12 * 60))
    meals[:, 60], meals[:, 6 * 60] = 60.0, 40.0
    glucose = dose_and_simulate([patient] * 3, basal_u_per_h=patient.basal_rate_u_per_h,
                                carb_ratio_g_per_u=[patient.carb_ratio_g_per_u, patient.carb_ratio_g_per_u / 1.5, 1e6],
                                correction_factor_mgdl_per_u=50.0, meals_g=meals, target_mgdl=400.0)
    assert glucose.shape == (3, 12 * 60 + 1)
    assert np.all(glucose[1] <= glucose[0] + 1e-9) and glucose[1].min() < glucose[0].min() - 1  # more insulin, lower
    assert glucose[2].max() > glucose[0].max() + 30  # no bolus (CR huge): a higher peak
    assert glucose[0, 0] == pytest.approx(glucose[0, 59], abs=0.5)  # steady before the first meal


@pytest.fixture(scope="module")
def day_record():
    """One day of the test patient's record (a simulation with its sensor): built once for the module."""
    record, truth = virtual_patient_record(PATIENT, days=1, seed=2)
    return record, truth


def _twin_at_truth(name: str, record) -> CalibratedTwin:
    """A twin whose fitted parameters are the patient's own, with a small posterior (no calibration needed)."""
    truth = load_patient(name)
    prior = PopulationPrior.from_patients(exclude=[name])
    map_log = np.log([truth.values[s] for s in FITTED])
    return CalibratedTwin(name, prior, infer_therapy(record), map_log, np.eye(len(FITTED)) * 0.05**2, 10.0, 0.5, 1, True,
                          calibration_minutes=record.minutes, reference_values=dict(truth.values))


@pytest.mark.slow  # a search of about 30 plans x 4 members x 1 day: 10-25 s
def test_the_search_brings_an_over_insulinised_therapy_within_the_limits(day_record):
    record, truth = day_record
    twin = _twin_at_truth(PATIENT, record)
    aggressive = TherapySettings(truth.basal_rate_u_per_h * 1.3, truth.carb_ratio_g_per_u / 1.8, 40.0)
    result = optimise_therapy(twin, record, current=aggressive, members=4, days=1)
    assert not result.current.meets_limits
    assert result.current.high["time_below_70"] > TBR70_LIMIT or result.current.high["time_below_54"] > TBR54_LIMIT
    assert result.proposed.meets_limits and result.proposed.high["time_below_54"] <= TBR54_LIMIT + 1e-9
    assert result.changed and result.fixes_hypoglycaemia and result.recommendation.startswith("change: ")
    assert result.paired_change["time_below_70"]["high"] <= 0  # no calibrated twin is worse below 70
    proposed = result.proposed.settings
    assert proposed.carb_ratio_g_per_u > aggressive.carb_ratio_g_per_u or proposed.basal_u_per_h < aggressive.basal_u_per_h
    for value, start in zip(vars(proposed).values(), vars(aggressive).values()):
        assert start / 2 - 0.05 <= value <= start * 2 + 0.05  # the search stays within half and twice the current
    assert "clinician" in result.note and "not a prescription" in result.note
    assert result.days == 1 and result.members == 4 and result.plans_evaluated > 6


def test_a_record_shorter_than_six_hours_is_refused(day_record):
    record, _ = day_record
    short = record.window(0, 5 * 60)
    with pytest.raises(ValueError, match="6 hours"):
        optimise_therapy(_twin_at_truth(PATIENT, record), short, members=2, days=1)


def _search_with(current_traces, plan_traces):
    """A search whose current and one candidate plan were 'simulated' as the given traces (members, minutes)."""
    from types import SimpleNamespace

    from node.twins.optimiser import _Search, _score, _admissible

    current, plan = TherapySettings(1.0, 10.0, 50.0), TherapySettings(1.2, 9.0, 45.0)
    search = _Search(SimpleNamespace(patient_id="p"), [None] * len(current_traces), np.zeros(10), None,
                     np.zeros((len(current_traces), 10)), current, best=current)
    search.glucose[current], search.glucose[plan] = np.asarray(current_traces, float), np.asarray(plan_traces, float)
    search.scores[current] = _score(search.glucose[current])
    return search, current, plan, _admissible


def test_a_plan_is_kept_unless_every_twin_is_no_worse_below_70_and_in_range():
    from node.twins.optimiser import _result

    in_range = [100.0] * 100
    high = [100.0] * 50 + [200.0] * 50  # 50 % in range, nothing below 70
    # Current meets the limits; the plan raises time in range for three twins but takes one below 70.
    search, current, plan, admissible = _search_with([high] * 4, [in_range] * 3 + [[65.0] * 3 + [100.0] * 97])
    assert search.scores[current][0] and not admissible(search, plan)
    # ... or lowers one twin's time in range: refused as well.
    search, current, plan, admissible = _search_with([high] * 4, [in_range] * 3 + [[200.0] * 100])
    assert not admissible(search, plan)
    # Better for every twin: admissible.
    search, current, plan, admissible = _search_with([high] * 4, [in_range] * 4)
    assert admissible(search, plan)
    kept = _result(search)  # the search never moved: the current plan stays, with the reason
    assert not kept.changed and kept.recommendation.startswith("no change recommended: ")
    assert kept.proposed.settings == current and kept.paired_change["time_below_70"]["high"] == 0.0


def test_a_plan_that_fixes_hypoglycaemia_may_cost_time_in_range_and_says_so():
    from node.twins.optimiser import _result, _score

    hypo = [60.0] * 10 + [100.0] * 90  # 10 % below 70: breaks the 4 % limit
    safe_but_high = [100.0] * 70 + [200.0] * 30  # none below 70, less in range
    search, current, plan, admissible = _search_with([hypo] * 4, [safe_but_high] * 4)
    assert not search.scores[current][0] and admissible(search, plan)
    search.scores[plan], search.best = _score(search.glucose[plan]), plan
    answer = _result(search)
    assert answer.changed and answer.fixes_hypoglycaemia and answer.proposed.meets_limits
    assert answer.recommendation.startswith("change: the current plan breaks the hypoglycaemia limits")
    assert answer.paired_change["time_in_range_70_180"]["median"] < 0 < -answer.paired_change["time_below_70"]["high"]


def test_a_patients_answer_does_not_depend_on_who_else_is_in_the_batch(day_record):
    from node.twins.optimiser import optimise_many

    record, _ = day_record
    morning = record.window(3 * 60, 9 * 60)  # 6 h around breakfast: a short search
    twin = _twin_at_truth(PATIENT, morning)
    alone = optimise_many([twin], [morning], members=2, days=1, max_iterations=1)[0]
    batch = optimise_many([twin, twin], [morning, morning], members=2, days=1, max_iterations=1)
    for answer in batch:  # the API answers one patient; the benchmark's check batches 30: the same answer
        assert answer.proposed.settings == alone.proposed.settings
        assert answer.current.median == alone.current.median and answer.recommendation == alone.recommendation
