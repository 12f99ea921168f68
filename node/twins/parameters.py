"""The 30 in-silico patients of the UVA/Padova model: their parameter sets (symbols as published, units in
`PARAMETER_UNITS`), the 13 initial states, the clinical figures, and cohorts of them stacked for batched
simulation (node/twins/uva_padova.py).

The tables come with simglucose (Copyright (c) 2017 Jinyu Xie, MIT) and ship as package data in
node/twins/data/uva-padova/ (its README.md and LICENSE-simglucose say where from and under which terms).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data" / "uva-padova"  # package data: the tables ship in the wheel
PMOL_PER_U = 6000.0  # 1 U of insulin = 6000 pmol

STATE_NAMES = (
    "stomach_solid_mg",
    "stomach_liquid_mg",
    "gut_mg",
    "plasma_glucose_mg_per_kg",
    "tissue_glucose_mg_per_kg",
    "plasma_insulin_pmol_per_kg",
    "insulin_action_utilisation_pmol_per_l",
    "insulin_action_production_1_pmol_per_l",
    "insulin_action_production_2_pmol_per_l",
    "liver_insulin_pmol_per_kg",
    "subcutaneous_insulin_1_pmol_per_kg",
    "subcutaneous_insulin_2_pmol_per_kg",
    "subcutaneous_glucose_mg_per_kg",
)
N_STATES = len(STATE_NAMES)

# The model's parameters, with units, in the order of the CSV's columns that the model uses.
PARAMETER_UNITS = {
    "BW": "kg",  # body weight
    "EGPb": "mg/kg/min",  # basal endogenous glucose production
    "Gb": "mg/dL",  # basal plasma glucose
    "Ib": "pmol/L",  # basal plasma insulin
    "kabs": "1/min",
    "kmax": "1/min",
    "kmin": "1/min",
    "b": "1",
    "d": "1",
    "Vg": "dL/kg",
    "Vi": "L/kg",
    "Vmx": "mg/kg/min per pmol/L",
    "Km0": "mg/kg",
    "Vm0": "mg/kg/min",
    "k1": "1/min",
    "k2": "1/min",
    "p2u": "1/min",
    "m1": "1/min",
    "m2": "1/min",
    "m4": "1/min",
    "m30": "1/min",
    "ki": "1/min",
    "kp1": "mg/kg/min",
    "kp2": "1/min",
    "kp3": "mg/kg/min per pmol/L",
    "f": "1",
    "ke1": "1/min",
    "ke2": "mg/kg",
    "Fsnc": "mg/kg/min",
    "kd": "1/min",
    "ksc": "1/min",
    "ka1": "1/min",
    "ka2": "1/min",
    "u2ss": "pmol/kg/min",  # steady-state (basal) insulin infusion
    "Gpb": "mg/kg",
    "Ipb": "pmol/kg",
}
MODEL_PARAMETERS = tuple(PARAMETER_UNITS)


@dataclass(frozen=True)
class PatientParameters:
    """One in-silico patient: the model's parameters (symbols as published, units in PARAMETER_UNITS),
    the 13 initial (basal steady) states, and the clinical figures from Quest.csv."""

    name: str
    values: dict  # symbol -> float
    initial_states: np.ndarray  # (13,)
    carb_ratio_g_per_u: float
    correction_factor_mgdl_per_u: float
    age_years: float
    total_daily_insulin_u: float

    def __getattr__(self, symbol: str) -> float:
        try:
            return self.__dict__["values"][symbol]
        except KeyError:
            raise AttributeError(symbol) from None

    @property
    def body_weight_kg(self) -> float:
        return self.values["BW"]

    @property
    def basal_glucose_mgdl(self) -> float:
        return self.values["Gb"]

    @property
    def basal_insulin_pmol_per_l(self) -> float:
        return self.values["Ib"]

    @property
    def basal_insulin_pmol_per_kg_min(self) -> float:
        return self.values["u2ss"]

    @property
    def basal_rate_u_per_h(self) -> float:
        return basal_rate_u_per_h(self.values["u2ss"], self.values["BW"])


def basal_rate_u_per_h(u2ss_pmol_per_kg_min, body_weight_kg):
    """The basal infusion in U/h that holds the patient at steady state."""
    return np.asarray(u2ss_pmol_per_kg_min) * np.asarray(body_weight_kg) / PMOL_PER_U * 60.0


def _read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["Name"].strip(): row for row in csv.DictReader(handle)}


def patient_names(data_dir: Path = DATA_DIR) -> list[str]:
    """The 30 patients: adolescent#001..010, adult#001..010, child#001..010."""
    return list(_read_csv(data_dir / "vpatient_params.csv"))


def load_patient(name: str, data_dir: Path = DATA_DIR) -> PatientParameters:
    rows = _read_csv(data_dir / "vpatient_params.csv")
    if name not in rows:
        raise KeyError(f"unknown patient {name!r}; known: {', '.join(rows)}")
    row = rows[name]
    quest = _read_csv(data_dir / "Quest.csv")[name]
    values = {symbol: float(row[symbol]) for symbol in MODEL_PARAMETERS}
    initial = np.array([float(row[f"x0_{i:2d}"]) for i in range(1, N_STATES + 1)])
    return PatientParameters(
        name=name,
        values=values,
        initial_states=initial,
        carb_ratio_g_per_u=float(quest["CR"]),
        correction_factor_mgdl_per_u=float(quest["CF"]),
        age_years=float(quest["Age"]),
        total_daily_insulin_u=float(quest["TDI"]),
    )


@dataclass(frozen=True)
class Cohort:
    """Several patients' parameters stacked: each symbol maps to an array of shape (patients,)."""

    patients: tuple[PatientParameters, ...]
    arrays: dict = field(repr=False)

    @classmethod
    def of(cls, patients) -> "Cohort":
        patients = tuple(load_patient(p) if isinstance(p, str) else p for p in patients)
        arrays = {s: np.array([p.values[s] for p in patients]) for s in MODEL_PARAMETERS}
        return cls(patients=patients, arrays=arrays)

    @classmethod
    def load(cls, names=None, data_dir: Path = DATA_DIR) -> "Cohort":
        names = patient_names(data_dir) if names is None else names
        cache = {n: load_patient(n, data_dir) for n in dict.fromkeys(names)}
        return cls.of([cache[n] for n in names])

    def __len__(self) -> int:
        return len(self.patients)

    def __getattr__(self, symbol: str) -> np.ndarray:
        try:
            return self.__dict__["arrays"][symbol]
        except KeyError:
            raise AttributeError(symbol) from None

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.patients]

    @property
    def initial_states(self) -> np.ndarray:
        return np.stack([p.initial_states for p in self.patients])

    @property
    def body_weight_kg(self) -> np.ndarray:
        return self.arrays["BW"]

    @property
    def basal_glucose_mgdl(self) -> np.ndarray:
        return self.arrays["Gb"]

    @property
    def basal_rate_u_per_h(self) -> np.ndarray:
        return basal_rate_u_per_h(self.arrays["u2ss"], self.arrays["BW"])

    @property
    def carb_ratio_g_per_u(self) -> np.ndarray:
        return np.array([p.carb_ratio_g_per_u for p in self.patients])
