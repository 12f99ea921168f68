"""The eating rate (g/min) travels with a patient's meals: record, stored form, calibration inputs, forecasts."""

from datetime import datetime, timezone

import numpy as np

from node.twins.forecast import known_inputs
from node.twins.records import DiabetesRecord, Event, build_record, check_range
from node.twins.twin import record_inputs


def _record(minutes=120):
    carbs, rate = np.zeros(minutes), np.full(minutes, np.nan)
    carbs[10], rate[10] = 40.0, 2.0  # a slow meal: 20 minutes
    carbs[70] = 30.0  # rate unknown: the reference's 5 g/min
    return DiabetesRecord("p1", datetime(2026, 1, 5, tzinfo=timezone.utc), np.full(minutes, 120.0), carbs,
                          np.zeros(minutes), np.full(minutes, 1.0), 70.0, eating_rate_g_per_min=rate)


def test_calibration_eats_each_recorded_meal_at_its_own_rate():
    carbs, _ = record_inputs(_record())
    assert (carbs[10:30] == 2.0).all() and carbs[30:70].sum() == 0
    assert (carbs[70:76] == 5.0).all() and carbs[76:].sum() == 0


def test_the_eating_rate_survives_windows_and_the_stored_form():
    record = _record()
    again = DiabetesRecord.from_clinical("p1", record.to_clinical())
    assert np.array_equal(np.isfinite(again.eating_rate_g_per_min), np.isfinite(record.eating_rate_g_per_min))
    assert again.eating_rate_g_per_min[10] == 2.0
    assert record.window(5, 50).eating_rate_g_per_min[5] == 2.0


def test_a_forecast_from_inside_a_meal_keeps_eating_it_and_does_not_restart_it():
    known = known_inputs(_record(), 20, 30)  # 10 minutes into the 20-minute meal
    assert (known.carbs_g_per_min[0, :10] == 2.0).all() and known.carbs_g_per_min[0, 10:].sum() == 0
    assert not known.meal_starts[0, 0]  # D keeps growing from the meal's own start


def test_an_importer_passes_the_eating_rate_as_an_event_beside_the_meal():
    # What node/records' readers emit for a meal with a known rate: carbs_g and eating_rate_g_per_min at
    # the meal's start (an "eating_rate_g_per_min" CSV column, for example).
    t0 = datetime(2026, 1, 5, 7, 0, tzinfo=timezone.utc)
    events = [Event(t0, "cgm_mgdl", 110.0, "line 1"), Event(t0.replace(minute=30), "carbs_g", 45.0, "line 2"),
              Event(t0.replace(minute=30), "eating_rate_g_per_min", 3.0, "line 2"),
              Event(t0.replace(minute=59), "cgm_mgdl", 150.0, "line 3")]
    problems = []
    record = build_record("p1", events, problems)
    assert not problems and record.eating_rate_g_per_min[30] == 3.0
    assert np.isnan(record.eating_rate_g_per_min[:30]).all()
    assert check_range("eating_rate_g_per_min", 0.0) is not None  # a meal is eaten at some positive rate
    carbs, _ = record_inputs(record)
    assert (carbs[30:45] == 3.0).all() and carbs[45:].sum() == 0
