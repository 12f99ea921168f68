"""Physiology and numerics of the UVA/Padova patient twins (node/twins): fast, no chain, no network."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from node.twins import devices
from node.twins.uva_padova import STATE_NAMES, Cohort, Scenario, Trajectories, basal_rate_u_per_h, eat_meals, load_patient, next_meal_size_mg, patient_names, simulate, simulate_one_patient_solve_ivp
from node.twins.steady_state import basal_states, basal_steady_state
from node.twins.stability import rk4_stability

DAY_MIN = 24 * 60
UNIT_SUFFIX = re.compile(r"_(mg|mgdl|g|u|min|kg|pmol_per_kg|pmol_per_l|pmol_per_kg_min|g_per_min|u_per_min|u_per_h|"
                         r"mg_per_kg|mg_per_min|years|g_per_u|mgdl_per_u)$")


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return Cohort.load()


def test_thirty_patients_load_by_name():
    names = patient_names()
    assert len(names) == 30
    assert {n.split("#")[0] for n in names} == {"adolescent", "adult", "child"}
    adult = load_patient("adult#001")
    assert adult.body_weight_kg == pytest.approx(102.32)
    assert adult.initial_states.shape == (13,)
    # The basal rate in U/h follows from u2ss (pmol/kg/min) and body weight: 1 U = 6000 pmol.
    assert adult.basal_rate_u_per_h == pytest.approx(adult.u2ss * adult.body_weight_kg / 6000 * 60)
    with pytest.raises(KeyError):
        load_patient("adult#099")


def test_units_are_explicit_in_names():
    assert len(STATE_NAMES) == 13 and all(UNIT_SUFFIX.search(n) for n in STATE_NAMES)
    for cls in (Trajectories, Scenario):
        for f in dataclasses.fields(cls):
            if f.name not in ("states", "final_states", "meal_starts"):
                assert UNIT_SUFFIX.search(f.name), f"{cls.__name__}.{f.name} has no unit in its name"
    for cls in (devices.CGMSensor, devices.InsulinPump):
        for f in dataclasses.fields(cls):
            if f.name.endswith(("time", "bolus", "basal", "glucose")):
                pytest.fail(f"{cls.__name__}.{f.name} has no unit in its name")


def test_basal_insulin_holds_every_patient_at_basal_glucose_for_24_hours(cohort):
    trajectories = simulate(cohort, Scenario.build(cohort, DAY_MIN))
    deviation_mgdl = np.abs(trajectories.plasma_glucose_mgdl - cohort.basal_glucose_mgdl[:, None]).max(axis=1)
    assert deviation_mgdl.max() < 1.0, dict(zip(cohort.names, deviation_mgdl.round(3)))
    cgm_deviation_mgdl = np.abs(trajectories.subcutaneous_glucose_mgdl - cohort.basal_glucose_mgdl[:, None])
    assert cgm_deviation_mgdl.max() < 1.0
    assert np.abs(trajectories.plasma_insulin_pmol_per_l - cohort.Ib[:, None]).max() < 0.1


def test_a_meal_raises_glucose_which_peaks_and_returns_towards_baseline(cohort):
    meal_at_min = 60
    trajectories = simulate(cohort, Scenario.build(cohort, 16 * 60 + meal_at_min, meals=[(meal_at_min, 50.0)]))
    glucose_mgdl = trajectories.plasma_glucose_mgdl
    excess_mgdl = glucose_mgdl - cohort.basal_glucose_mgdl[:, None]
    peak_min = glucose_mgdl.argmax(axis=1) - meal_at_min
    peak_excess_mgdl = excess_mgdl.max(axis=1)
    assert (excess_mgdl[:, : meal_at_min + 1] < 1e-6).all()  # nothing before the meal
    assert (peak_excess_mgdl > 30).all(), peak_excess_mgdl
    assert ((peak_min >= 30) & (peak_min <= 5 * 60)).all(), peak_min  # the peak comes within hours
    # With basal insulin only (no bolus), 15 hours after the meal every patient is most of the way back.
    assert (excess_mgdl[:, -1] < 0.5 * peak_excess_mgdl).all()
    assert (glucose_mgdl[:, -1] < glucose_mgdl[:, -120]).all()  # still falling towards baseline


def test_meal_bolus_blunts_the_rise(cohort):
    carbs_g = 50.0
    bolus_u = carbs_g / cohort.carb_ratio_g_per_u  # the patient's own carbohydrate ratio
    without = simulate(cohort, Scenario.build(cohort, 8 * 60, meals=[(60, carbs_g)]))
    with_bolus = simulate(cohort, Scenario.build(cohort, 8 * 60, meals=[(60, carbs_g)], boluses=[(60, bolus_u)]))
    assert (with_bolus.plasma_glucose_mgdl.max(axis=1) < without.plasma_glucose_mgdl.max(axis=1)).all()
    assert (with_bolus.plasma_glucose_mgdl.min(axis=1) > 39).all()  # no severe hypo from a correct bolus


def test_more_insulin_never_raises_glucose(cohort):
    minutes = 10 * 60
    doses_u = [0.0, 1.0, 2.0, 4.0, 8.0]
    glucose_by_dose = [
        simulate(cohort, Scenario.build(cohort, minutes, meals=[(60, 60.0)], boluses=[(60, dose_u)])).plasma_glucose_mgdl
        for dose_u in doses_u
    ]
    for less, more in zip(glucose_by_dose, glucose_by_dose[1:]):
        assert (more <= less + 1e-9).all()
    # ... and a higher basal rate, without a meal, lowers glucose at every minute after the start.
    basal = simulate(cohort, Scenario.build(cohort, minutes)).plasma_glucose_mgdl
    higher = simulate(cohort, Scenario.build(cohort, minutes, basal_u_per_h=1.5 * cohort.basal_rate_u_per_h))
    assert (higher.plasma_glucose_mgdl <= basal + 1e-9).all()
    assert (higher.plasma_glucose_mgdl[:, -1] < basal[:, -1] - 5).all()


def test_batched_rk4_matches_one_patient_at_a_time_solve_ivp():
    names = ["adolescent#002", "adult#001", "adult#007", "child#001", "child#005", "adolescent#006"]
    cohort = Cohort.load(names)
    carbs = [45.0, 70.0, 80.0]
    times_min = [7 * 60, 12 * 60, 19 * 60]
    scenario = Scenario.build(cohort, DAY_MIN, meals=list(zip(times_min, carbs)),
                              boluses=[(t, c / cohort.carb_ratio_g_per_u) for t, c in zip(times_min, carbs)])
    batched = simulate(cohort, scenario).plasma_glucose_mgdl
    for i, patient in enumerate(cohort.patients):
        reference = simulate_one_patient_solve_ivp(patient, scenario.carbs_g_per_min[i], scenario.insulin_u_per_min[i])
        assert np.abs(batched[i] - reference).max() < 0.1, patient.name  # mg/dL, over a day with three meals


def test_rk4_at_one_minute_is_stable_along_a_meal_day(cohort):
    scenario = Scenario.build(cohort, 8 * 60, meals=[(60, 50.0)], boluses=[(60, 50.0 / cohort.carb_ratio_g_per_u)])
    trajectories = simulate(cohort, scenario, keep_states=True)
    stability = rk4_stability(cohort, trajectories.states, scenario, every_min=10)
    assert stability["max_abs_eigenvalue_per_min"] < 2.78
    assert stability["max_rk4_amplification_of_decaying_modes"] <= 1.0


def test_cohort_may_repeat_patients_and_the_batch_does_not_mix_them():
    names = ["child#003", "adult#004", "child#003"]
    small = Cohort.load(names)
    scenario = Scenario.build(small, 300, meals=[(30, 40.0)])
    together = simulate(small, scenario).plasma_glucose_mgdl
    alone = simulate(Cohort.load(["adult#004"]), Scenario.build(Cohort.load(["adult#004"]), 300, meals=[(30, 40.0)]))
    # Equal up to rounding (numpy's vector lanes may sum a row in another order).
    assert np.allclose(together[0], together[2], rtol=0, atol=1e-9)
    assert np.allclose(together[1], alone.plasma_glucose_mgdl[0], rtol=0, atol=1e-9)


def test_meal_size_restarts_from_the_stomach_at_a_meal_and_grows_with_what_is_eaten():
    # The reference's rule (Dalla Man 2007, simglucose): D = stomach content when eating starts + what has
    # been eaten so far (this minute included); it holds between meals. The old rule (the whole meal from
    # its first minute) is what made the twin differ from the reference by up to 22 mg/dL (issue 16).
    carbs = np.zeros((2, 40))
    carbs[0, 5:10] = 2.0
    carbs[0, 20:22] = 1.0
    carbs[1, 39] = 3.0
    scenario = Scenario(carbs, np.zeros_like(carbs))
    assert set(zip(*np.nonzero(scenario.meal_starts))) == {(0, 5), (0, 20), (1, 39)}
    states = np.zeros((2, 13))
    states[:, 0], states[:, 1] = 100.0, 50.0  # 150 mg in the stomach
    size = np.zeros(2)
    sizes = []
    for m in range(40):
        size = next_meal_size_mg(size, states, scenario.meal_starts[:, m], carbs[:, m] * 1000)
        sizes.append(size.copy())
    sizes = np.array(sizes)
    assert sizes[4, 0] == 0 and sizes[5, 0] == 150 + 2000 and sizes[9, 0] == 150 + 10000
    assert sizes[15, 0] == 150 + 10000  # holds after the meal
    assert sizes[20, 0] == 150 + 1000 and sizes[21, 0] == 150 + 2000  # restarts at the next meal
    assert sizes[38, 1] == 0 and sizes[39, 1] == 150 + 3000


def test_each_sensor_type_has_its_own_error_model_sample_time_and_range():
    sensors = {n: devices.CGMSensor.load(n) for n in devices.sensor_names()}
    assert set(sensors) == {"Dexcom", "GuardianRT", "Navigator"}
    assert len({(s.model, s.ar_noise, s.gain_coefficients) for s in sensors.values()}) == 3
    assert (sensors["Dexcom"].min_glucose_mgdl, sensors["Dexcom"].max_glucose_mgdl) == (40.0, 400.0)
    assert (sensors["GuardianRT"].min_glucose_mgdl, sensors["GuardianRT"].max_glucose_mgdl) == (40.0, 400.0)
    # Sample times from the simulator's sensor_params.csv; the error models run at the step they were
    # identified at (5 min; Johnson's 15 min) and are spline-interpolated to it.
    assert [sensors[n].sample_time_min for n in ("Dexcom", "GuardianRT", "Navigator")] == [3.0, 5.0, 1.0]
    assert sensors["Dexcom"].model_sample_time_min == 5.0
    rng = np.random.default_rng(3)
    for sensor in sensors.values():
        time_min, cgm_mgdl = sensor.read(np.full((3, 121), 500.0), rng)
        assert time_min[-1] == 120 and cgm_mgdl.shape == (3, int(120 / sensor.sample_time_min) + 1)
        assert np.nanmax(cgm_mgdl) <= sensor.max_glucose_mgdl
        _, low = sensor.read(np.full((3, 121), 25.0), rng)
        assert np.nanmin(low) >= sensor.min_glucose_mgdl


def test_dexcom_g6_error_drifts_over_the_days_of_wear_with_autocorrelated_noise():
    sensor = devices.CGMSensor.load("Dexcom")
    rng = np.random.default_rng(7)
    # Vettoretti 2019, Table 1: b(t) = -6.4 + 6.18 t - 0.448 t^2 mg/dL, a(t) = 1.048 - 0.033 t + 0.002 t^2.
    gain, offset = sensor.drift(np.array([0.0, 5 * DAY_MIN]), 1, np.random.default_rng(0))
    assert gain.shape == (1, 2) and offset[0, 1] != offset[0, 0]
    days = np.array([0.0, 3.0, 6.9])
    a0, a1, a2 = sensor.gain_coefficients
    b0, b1, b2 = sensor.offset_coefficients_mgdl
    assert b0 + b1 * days[2] + b2 * days[2] ** 2 > 14 and b0 < -6  # reads low on day 0, high around day 7
    noise_mgdl = sensor.noise_mgdl(300, 2 * DAY_MIN, rng)
    assert abs(noise_mgdl.mean()) < 1.5 and 4 < noise_mgdl.std() < 12
    lag = int(15 / sensor.sample_time_min)
    assert np.corrcoef(noise_mgdl[:, :-lag].ravel(), noise_mgdl[:, lag:].ravel())[0, 1] > 0.4
    # The mean error of a day follows a(t), b(t): at 60 mg/dL a sensor reads about 56 on day 0 and 70 on
    # day 7, so patients on different days of wear differ by several mg/dL.
    time_min, cgm_mgdl = sensor.read(np.full((200, DAY_MIN + 1), 60.0), rng)
    assert np.nanstd(np.nanmean(cgm_mgdl - 60.0, axis=1)) > 3


def test_navigator_keeps_the_simulators_johnson_noise():
    sensor = devices.CGMSensor.load("Navigator")
    noise_mgdl = sensor.noise_mgdl(300, 7 * DAY_MIN, np.random.default_rng(7))
    # Breton & Kovatchev 2008: skewed, around zero, sd about 10 mg/dL, PACF 0.7 at 15 minutes.
    assert abs(noise_mgdl.mean()) < 3 and 6 < noise_mgdl.std() < 18
    assert np.corrcoef(noise_mgdl[:, :-15].ravel(), noise_mgdl[:, 15:].ravel())[0, 1] > 0.5


def test_sensors_lose_their_signal_now_and_then():
    sensor = devices.CGMSensor.load("Dexcom")
    _, cgm_mgdl = sensor.read(np.full((100, 7 * DAY_MIN + 1), 120.0), np.random.default_rng(1))
    lost = np.isnan(cgm_mgdl).mean()
    expected = sensor.gaps_per_day * sensor.mean_gap_min / DAY_MIN  # about 1.4 % of readings
    assert 0.5 * expected < lost < 2 * expected


def test_pump_rounds_to_its_increments_and_clips():
    pump = devices.InsulinPump.load("Insulet")
    assert pump.bolus_u(3.333) == pytest.approx(3.35)
    assert pump.bolus_u(100.0) == pump.max_bolus_u
    assert pump.basal_u_per_h(-1.0) == 0.0
    assert pump.basal_u_per_h(0.812) == pytest.approx(0.8)
    rates = pump.basal_u_per_h(basal_rate_u_per_h(Cohort.load().u2ss, Cohort.load().BW))
    assert rates.shape == (30,) and (rates >= 0).all()


def test_meals_are_eaten_at_their_eating_rate_in_grams_per_minute():
    meals_g = np.zeros((2, 60))
    meals_g[0, 10] = 22.0  # at the reference's 5 g/min: 5, 5, 5, 5, 2
    meals_g[1, 0] = 30.0
    rate = np.full((2, 60), np.nan)
    rate[1, 0] = 10.0  # a recorded rate for this meal: 10, 10, 10
    carbs = eat_meals(meals_g, rate)
    assert carbs[0, 10:15].tolist() == [5.0, 5.0, 5.0, 5.0, 2.0] and carbs[0, 15:].sum() == 0
    assert carbs[1, :3].tolist() == [10.0, 10.0, 10.0] and carbs[1, 3:].sum() == 0
    assert carbs.sum() == pytest.approx(52.0)
    scenario = Scenario.build(Cohort.load(["adult#001"]), 60, meals=[(5, 20.0), (30, 9.0, 3.0)])
    assert scenario.carbs_g_per_min[0, 5:9].tolist() == [5.0] * 4
    assert scenario.carbs_g_per_min[0, 30:33].tolist() == [3.0] * 3


def test_every_virtual_patient_starts_at_the_steady_state_of_the_basal_its_pump_delivers(cohort):
    # The pump rounds u2ss to 0.05 U/h; started at the published states, child#004 drifted by -17 mg/dL in 24 h.
    delivered = devices.InsulinPump.load("Insulet").basal_u_per_h(cohort.basal_rate_u_per_h)
    assert not np.allclose(delivered, cohort.basal_rate_u_per_h)
    scenario = Scenario.build(cohort, DAY_MIN, basal_u_per_h=delivered)
    drift = simulate(cohort, scenario).plasma_glucose_mgdl
    assert np.abs(drift[:, -1] - drift[:, 0]).max() > 10
    steady = simulate(cohort, scenario, initial_states=basal_states(cohort, delivered))
    assert np.abs(steady.plasma_glucose_mgdl - steady.plasma_glucose_mgdl[:, :1]).max() < 1e-6
    assert np.abs(steady.subcutaneous_glucose_mgdl - steady.plasma_glucose_mgdl[:, :1]).max() < 1e-6
    # At the exact u2ss the published states come back.
    assert np.abs(basal_states(cohort, cohort.basal_rate_u_per_h) - cohort.initial_states).max() < 1e-6
    with pytest.raises(ValueError):
        basal_steady_state(cohort.patients[0].values, 50.0)  # no positive glucose under this basal
