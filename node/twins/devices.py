"""Devices around the patient twin: a CGM sensor with its own error model per sensor type, and an insulin pump.

CGM (`CGMSensor`, one row per sensor type in data/uva-padova/cgm_error_models.csv):
- Dexcom (G6, factory calibrated, 10-day wear, 40-400 mg/dL): the error model of
  Vettoretti, Del Favero, Sparacino, Facchinetti, "Modeling the error of factory-calibrated continuous
  glucose monitoring sensors: application to Dexcom G6 sensor data", IEEE EMBC 2019 (Tables 1 and 2):
  drift a(t) IG + b(t) over the days of wear plus two AR(2) noise processes.
- GuardianRT (calibrated every 12 h, 40-400 mg/dL): no published error model of its own was
  at hand; the model of Facchinetti et al., "Modeling the glucose sensor error", IEEE TBME 61(3), 2014
  (identified on a twice-daily calibrated sensor), with t the days since the last calibration.
- Navigator (20-500 mg/dL): the simulator's noise of Breton and Kovatchev, J Diabetes Sci
  Technol 2(5), 2008 (sensor_params.csv): an AR(1) at 15 min, e_n = PACF (e_{n-1} + v_n), through
  Johnson's S_U transform eps = xi + lambda sinh((e - gamma)/delta), spline-interpolated; no drift.
- Reading intervals come from the simulator's sensor_params.csv (Dexcom 3, GuardianRT 5, Navigator 1 min);
  each error model runs at the step it was identified at and is spline-interpolated to the readings.
- Every type loses its signal now and then (NaN readings; 1 gap a day of 20 min on average: an assumption,
  not a fitted figure) and reports within its range.

Pump (pump_params.csv): basal rates (U/h) and boluses (U) are rounded to the pump's increments and
clipped to its [min, max].
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from node.twins.parameters import DATA_DIR



def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["Name"].strip(): row for row in csv.DictReader(handle)}


ERROR_MODELS_FILE = "cgm_error_models.csv"  # ours (sources in the data README): one error model per sensor type


@dataclass(frozen=True)
class CGMSensor:
    """A CGM sensor type with its own error model, sample time, reading range and signal losses.

    - `model == "drift_ar2"` (Facchinetti et al., IEEE TBME 61(3), 2014; Dexcom G6 parameters from
      Vettoretti et al., IEEE EMBC 2019): reading = a(t) IG + b(t) + v + cc, with a(t) = a0 + a1 t + a2 t^2,
      b(t) = b0 + b1 t + b2 t^2 (mg/dL), t the days since the sensor was inserted (factory calibrated) or
      last calibrated, restarting every `drift_reset_days` (each patient at a random point of that cycle);
      v and cc AR(2) processes at the sample time (v_n = ar_w1 v_{n-1} + ar_w2 v_{n-2} + N(0, var_w), cc
      likewise): the drift is the slow a(t), b(t), the noise the AR terms.
    - `model == "johnson"` (Breton and Kovatchev, J Diabetes Sci Technol 2(5), 2008; the simulator's
      noise, parameters in sensor_params.csv): reading = IG + Johnson S_U transform of an AR(1) at 15 min,
      spline-interpolated to the sample time. No drift in the published model.
    - Signal loss, all types: gaps start as a Poisson process (`gaps_per_day`) and last an exponential
      time (mean `mean_gap_min`); readings in a gap are NaN.
    - Readings are clipped to the sensor's range [min_glucose_mgdl, max_glucose_mgdl] (a sensor reports
      LOW/HIGH there)."""

    name: str
    model: str
    sample_time_min: float  # how often the sensor reports (sensor_params.csv)
    model_sample_time_min: float  # the step at which its error model was identified (then spline-interpolated)
    min_glucose_mgdl: float
    max_glucose_mgdl: float
    drift_reset_days: float
    gain_coefficients: tuple = (1.0, 0.0, 0.0)  # a0, a1 (1/day), a2 (1/day^2)
    offset_coefficients_mgdl: tuple = (0.0, 0.0, 0.0)  # b0, b1 (per day), b2 (per day^2)
    ar_noise: tuple = (0.0, 0.0, 0.0)  # ar_w1, ar_w2, var_w (mg/dL)^2
    ar_common: tuple = (0.0, 0.0, 0.0)  # ar_cc1, ar_cc2, var_cc (mg/dL)^2
    gaps_per_day: float = 0.0
    mean_gap_min: float = 0.0
    pacf: float = 0.0
    gamma: float = 0.0
    lambda_: float = 0.0
    delta: float = 1.0
    xi: float = 0.0

    @classmethod
    def load(cls, name: str = "Dexcom", data_dir: Path = DATA_DIR) -> "CGMSensor":
        rows = _rows(data_dir / ERROR_MODELS_FILE)
        if name not in rows:
            raise KeyError(f"unknown sensor {name!r}; known: {', '.join(rows)}")
        r = {k: v.strip() for k, v in rows[name].items()}
        johnson = _rows(data_dir / "sensor_params.csv")[name]
        f = lambda *keys: tuple(float(r[k]) for k in keys)  # noqa: E731
        return cls(name=name, model=r["model"], sample_time_min=float(johnson["sample_time"]),
                   model_sample_time_min=float(r["model_sample_time"]),
                   min_glucose_mgdl=float(r["min"]), max_glucose_mgdl=float(r["max"]),
                   drift_reset_days=float(r["drift_reset_days"]), gain_coefficients=f("a0", "a1", "a2"),
                   offset_coefficients_mgdl=f("b0", "b1", "b2"), ar_noise=f("ar_w1", "ar_w2", "var_w"),
                   ar_common=f("ar_cc1", "ar_cc2", "var_cc"), gaps_per_day=float(r["gaps_per_day"]),
                   mean_gap_min=float(r["mean_gap_min"]),
                   pacf=float(johnson["PACF"]), gamma=float(johnson["gamma"]), lambda_=float(johnson["lambda"]),
                   delta=float(johnson["delta"]), xi=float(johnson["xi"]))

    def noise_mgdl(self, patients: int, duration_min: float, rng: np.random.Generator) -> np.ndarray:
        """The additive, zero-drift part of the error (mg/dL) at times 0, sample_time, ... <= duration_min;
        shape (patients, samples)."""
        from scipy.interpolate import CubicSpline

        sample_times = np.arange(int(np.floor(duration_min / self.sample_time_min)) + 1) * self.sample_time_min
        step = self.model_sample_time_min
        coarse = int(np.ceil(sample_times[-1] / step)) + 2  # >= 3 knots for the spline
        if self.model == "johnson":
            eps = self._johnson(patients, coarse, rng)
        else:
            eps = _ar2(patients, coarse, *self.ar_noise, rng) + _ar2(patients, coarse, *self.ar_common, rng)
        if step == self.sample_time_min:
            return eps[:, : len(sample_times)]
        return CubicSpline(np.arange(coarse) * step, eps, axis=1)(sample_times)

    def _johnson(self, patients: int, coarse: int, rng: np.random.Generator) -> np.ndarray:
        e = np.empty((patients, coarse))
        e[:, 0] = rng.standard_normal(patients)
        innovations = rng.standard_normal((patients, coarse))
        for n in range(1, coarse):
            e[:, n] = self.pacf * (e[:, n - 1] + innovations[:, n])
        return self.xi + self.lambda_ * np.sinh((e - self.gamma) / self.delta)

    def drift(self, time_min: np.ndarray, patients: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(gain a(t), offset b(t) mg/dL) at the sample times, (patients, samples): each patient at a random
        point of its sensor's drift cycle at time 0."""
        start_days = rng.uniform(0.0, self.drift_reset_days, patients)[:, None]
        days = np.mod(start_days + np.asarray(time_min)[None, :] / (24 * 60), self.drift_reset_days)
        a0, a1, a2 = self.gain_coefficients
        b0, b1, b2 = self.offset_coefficients_mgdl
        return a0 + a1 * days + a2 * days**2, b0 + b1 * days + b2 * days**2

    def gaps(self, time_min: np.ndarray, patients: int, rng: np.random.Generator) -> np.ndarray:
        """(patients, samples) True where the signal is lost."""
        lost = np.zeros((patients, len(time_min)), dtype=bool)
        if self.gaps_per_day <= 0:
            return lost
        duration_min = float(time_min[-1]) if len(time_min) else 0.0
        counts = rng.poisson(self.gaps_per_day * duration_min / (24 * 60), patients)
        for row, count in enumerate(counts):
            for start, length in zip(rng.uniform(0, duration_min, count), rng.exponential(self.mean_gap_min, count)):
                lost[row] |= (time_min >= start) & (time_min < start + length)
        return lost

    def read(self, subcutaneous_glucose_mgdl: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """CGM readings from per-minute interstitial glucose (patients, minutes + 1): returns
        (time_min, cgm_mgdl) at the sensor's sample times, NaN where the signal is lost."""
        glucose = np.atleast_2d(subcutaneous_glucose_mgdl)
        patients, duration_min = glucose.shape[0], glucose.shape[1] - 1
        noise = self.noise_mgdl(patients, duration_min, rng)
        time_min = np.arange(noise.shape[1]) * self.sample_time_min
        # Per-minute glucose at the sample times (sample times are whole minutes for the shipped sensors).
        true = np.stack([np.interp(time_min, np.arange(duration_min + 1), row) for row in glucose])
        gain, offset = self.drift(time_min, patients, rng)
        readings = np.clip(gain * true + offset + noise, self.min_glucose_mgdl, self.max_glucose_mgdl)
        readings[self.gaps(time_min, patients, rng)] = np.nan
        return time_min, readings


def _ar2(patients: int, samples: int, c1: float, c2: float, variance: float, rng: np.random.Generator,
         burn_in: int = 200) -> np.ndarray:
    """A zero-mean AR(2) x_n = c1 x_{n-1} + c2 x_{n-2} + N(0, variance), started long enough before."""
    if variance <= 0:
        return np.zeros((patients, samples))
    w = rng.normal(0.0, np.sqrt(variance), (patients, samples + burn_in))
    x = np.zeros_like(w)
    for n in range(2, samples + burn_in):
        x[:, n] = c1 * x[:, n - 1] + c2 * x[:, n - 2] + w[:, n]
    return x[:, burn_in:]


@dataclass(frozen=True)
class InsulinPump:
    name: str
    min_bolus_u: float
    max_bolus_u: float
    bolus_increment_u: float
    min_basal_u_per_h: float
    max_basal_u_per_h: float
    basal_increment_u_per_h: float
    sample_time_min: float

    @classmethod
    def load(cls, name: str = "Insulet", data_dir: Path = DATA_DIR) -> "InsulinPump":
        rows = _rows(data_dir / "pump_params.csv")
        if name not in rows:
            raise KeyError(f"unknown pump {name!r}; known: {', '.join(rows)}")
        r = rows[name]
        return cls(name=name, min_bolus_u=float(r["min_bolus"]), max_bolus_u=float(r["max_bolus"]),
                   bolus_increment_u=float(r["inc_bolus"]), min_basal_u_per_h=float(r["min_basal"]),
                   max_basal_u_per_h=float(r["max_basal"]), basal_increment_u_per_h=float(r["inc_basal"]),
                   sample_time_min=float(r["sample_time"]))

    def basal_u_per_h(self, requested_u_per_h) -> np.ndarray:
        """What the pump delivers for a requested basal rate (U/h): rounded to its increment, clipped."""
        rounded = np.round(np.asarray(requested_u_per_h, dtype=float) / self.basal_increment_u_per_h) * self.basal_increment_u_per_h
        return np.clip(rounded, self.min_basal_u_per_h, self.max_basal_u_per_h)

    def bolus_u(self, requested_u) -> np.ndarray:
        """What the pump delivers for a requested bolus (U): rounded to its increment, clipped."""
        rounded = np.round(np.asarray(requested_u, dtype=float) / self.bolus_increment_u) * self.bolus_increment_u
        return np.clip(rounded, self.min_bolus_u, self.max_bolus_u)


def sensor_names(data_dir: Path = DATA_DIR) -> list[str]:
    return list(_rows(data_dir / ERROR_MODELS_FILE))


def pump_names(data_dir: Path = DATA_DIR) -> list[str]:
    return list(_rows(data_dir / "pump_params.csv"))
