"""Devices around the patient twin: a CGM sensor with its noise, and an insulin pump.

CGM noise (Breton and Kovatchev, "Analysis, modeling, and simulation of the accuracy of continuous glucose
sensors", J Diabetes Sci Technol 2(5), 2008; used by the UVA/Padova simulator): at a 15-minute model
sample time a Gaussian AR(1) sequence

    e_n = PACF (e_{n-1} + v_n),   v_n ~ N(0, 1),   e_0 ~ N(0, 1)

is mapped through Johnson's S_U transform

    eps_n = xi + lambda sinh((e_n - gamma) / delta)          (mg/dL)

then interpolated (cubic spline) to the sensor's sample time; the reading is the interstitial glucose
(Gs / Vg) plus eps, clipped to the sensor's range [min, max]. Parameters per sensor in sensor_params.csv.

Pump (pump_params.csv): basal rates (U/h) and boluses (U) are rounded to the pump's increments and
clipped to its [min, max].
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from node.twins.parameters import DATA_DIR

NOISE_MODEL_SAMPLE_TIME_MIN = 15.0


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["Name"].strip(): row for row in csv.DictReader(handle)}


@dataclass(frozen=True)
class CGMSensor:
    name: str
    pacf: float
    gamma: float
    lambda_: float
    delta: float
    xi: float
    sample_time_min: float
    min_glucose_mgdl: float
    max_glucose_mgdl: float

    @classmethod
    def load(cls, name: str = "Dexcom", data_dir: Path = DATA_DIR) -> "CGMSensor":
        rows = _rows(data_dir / "sensor_params.csv")
        if name not in rows:
            raise KeyError(f"unknown sensor {name!r}; known: {', '.join(rows)}")
        r = rows[name]
        return cls(name=name, pacf=float(r["PACF"]), gamma=float(r["gamma"]), lambda_=float(r["lambda"]),
                   delta=float(r["delta"]), xi=float(r["xi"]), sample_time_min=float(r["sample_time"]),
                   min_glucose_mgdl=float(r["min"]), max_glucose_mgdl=float(r["max"]))

    def noise_mgdl(self, patients: int, duration_min: float, rng: np.random.Generator) -> np.ndarray:
        """Sensor error (mg/dL) at times 0, sample_time, ... < = duration_min; shape (patients, samples)."""
        from scipy.interpolate import CubicSpline

        samples = int(np.floor(duration_min / self.sample_time_min)) + 1
        sample_times = np.arange(samples) * self.sample_time_min
        coarse = int(np.ceil(sample_times[-1] / NOISE_MODEL_SAMPLE_TIME_MIN)) + 2  # >= 3 knots for the spline
        e = np.empty((patients, coarse))
        e[:, 0] = rng.standard_normal(patients)
        innovations = rng.standard_normal((patients, coarse))
        for n in range(1, coarse):
            e[:, n] = self.pacf * (e[:, n - 1] + innovations[:, n])
        eps = self.xi + self.lambda_ * np.sinh((e - self.gamma) / self.delta)
        spline = CubicSpline(np.arange(coarse) * NOISE_MODEL_SAMPLE_TIME_MIN, eps, axis=1)
        return spline(sample_times)

    def read(self, subcutaneous_glucose_mgdl: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """CGM readings from per-minute interstitial glucose (patients, minutes + 1): returns
        (time_min, cgm_mgdl) at the sensor's sample times."""
        glucose = np.atleast_2d(subcutaneous_glucose_mgdl)
        duration_min = glucose.shape[1] - 1
        noise = self.noise_mgdl(glucose.shape[0], duration_min, rng)
        time_min = np.arange(noise.shape[1]) * self.sample_time_min
        # Per-minute glucose at the sample times (sample times are whole minutes for the shipped sensors).
        true = np.stack([np.interp(time_min, np.arange(duration_min + 1), row) for row in glucose])
        return time_min, np.clip(true + noise, self.min_glucose_mgdl, self.max_glucose_mgdl)


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
    return list(_rows(data_dir / "sensor_params.csv"))


def pump_names(data_dir: Path = DATA_DIR) -> list[str]:
    return list(_rows(data_dir / "pump_params.csv"))
