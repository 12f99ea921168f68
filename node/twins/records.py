"""A type 1 diabetes patient's own records, as twins read them: CGM, meals and insulin on a minute grid.

Every array has one entry per minute from `start`; a minute without a CGM reading holds NaN in
`cgm_mgdl`, a minute without a meal or bolus holds 0. The readers in node/records/ (twin_fhir.py, twin_csv.py)
produce this shape; calibration, forecasting and the federated forecaster consume it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from federation.tasks.glucose_forecast import GlucoseForecastTask, decode

KIND = GlucoseForecastTask.record_kind  # node/store.py Patient.kind of these records: what the glucose task reads
# What a value may be; anything else is a malformed record (importers say which and where).
RANGES = {
    "cgm_mgdl": (20.0, 600.0),  # sensors report 39-400 (Dexcom) or 40-500; beyond this is no reading
    "carbs_g": (0.0, 500.0),  # one intake
    "bolus_u": (0.0, 50.0),  # one bolus
    "basal_u_per_h": (0.0, 15.0),
    "body_weight_kg": (1.0, 400.0),
    "age_years": (0.0, 120.0),  # at the record's start
    "eating_rate_g_per_min": (0.1, 100.0),  # how fast the meal recorded in that minute was eaten
}
MAX_RECORD_DAYS = 366
STATIC_FIELDS = ("body_weight_kg", "age_years")  # one value per patient, whatever the time it was read at


@dataclass(frozen=True)
class DiabetesRecord:
    patient_id: str  # the node's record id (never put on chain)
    start: datetime  # UTC, minute 0
    cgm_mgdl: np.ndarray  # (minutes,) sensor glucose, NaN where no reading
    carbs_g: np.ndarray  # (minutes,) carbohydrate of the meal(s) begun in that minute (the twin eats it at the meal's rate)
    bolus_u: np.ndarray  # (minutes,) insulin bolus given in that minute
    basal_u_per_h: np.ndarray  # (minutes,) basal rate in effect during that minute
    body_weight_kg: float | None = None
    # (minutes,) how fast the meal recorded in that minute was eaten (g/min); NaN or None: unknown, the
    # twin then assumes DEFAULT_EATING_RATE_G_PER_MIN (node/twins/uva_padova.py)
    eating_rate_g_per_min: np.ndarray | None = None
    age_years: float | None = None  # at `start`; None: unknown (the glucose task's age groups leave it out)

    def __post_init__(self):
        n = len(self.cgm_mgdl)
        for name in ("carbs_g", "bolus_u", "basal_u_per_h") + (("eating_rate_g_per_min",) if self.eating_rate_g_per_min is not None else ()):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} minutes, cgm_mgdl has {n}")

    @property
    def minutes(self) -> int:
        return len(self.cgm_mgdl)

    def window(self, first_min: int, last_min: int) -> "DiabetesRecord":
        """Minutes [first_min, last_min) as a record of their own (start moved accordingly)."""
        from datetime import timedelta

        part = slice(first_min, last_min)
        return DiabetesRecord(
            patient_id=self.patient_id,
            start=self.start + timedelta(minutes=first_min),
            cgm_mgdl=self.cgm_mgdl[part],
            carbs_g=self.carbs_g[part],
            bolus_u=self.bolus_u[part],
            basal_u_per_h=self.basal_u_per_h[part],
            body_weight_kg=self.body_weight_kg,
            eating_rate_g_per_min=None if self.eating_rate_g_per_min is None else self.eating_rate_g_per_min[part],
            age_years=self.age_years,
        )

    def to_clinical(self) -> dict:
        """The JSON the node seals in its store: sparse [minute, value] series (what the glucose task reads)."""

        def pairs(values: np.ndarray, keep) -> list[list[float]]:
            at = np.flatnonzero(keep)
            return [[int(m), round(float(values[m]), 4)] for m in at]

        basal = np.asarray(self.basal_u_per_h, dtype=float)
        changes = np.ones(len(basal), dtype=bool)
        changes[1:] = basal[1:] != basal[:-1]
        start = self.start if self.start.tzinfo else self.start.replace(tzinfo=timezone.utc)
        rate = {}
        if self.eating_rate_g_per_min is not None:
            rates = np.asarray(self.eating_rate_g_per_min, dtype=float)
            rate = {"eating_rate_g_per_min": pairs(rates, np.isfinite(rates) & (rates > 0))}
        return {
            **rate,
            "start": start.astimezone(timezone.utc).isoformat(),
            "minutes": self.minutes,
            "cgm_mgdl": pairs(self.cgm_mgdl, np.isfinite(self.cgm_mgdl)),
            "carbs_g": pairs(self.carbs_g, np.asarray(self.carbs_g) > 0),
            "bolus_u": pairs(self.bolus_u, np.asarray(self.bolus_u) > 0),
            "basal_u_per_h": pairs(basal, changes),
            "body_weight_kg": self.body_weight_kg,
            "age_years": self.age_years,
        }

    @classmethod
    def from_clinical(cls, patient_id: str, clinical: dict) -> "DiabetesRecord":
        from federation.tasks.glucose_forecast import series_to_grid

        series = decode(clinical)
        rate = None
        if clinical.get("eating_rate_g_per_min"):
            rate = series_to_grid(clinical["eating_rate_g_per_min"], int(clinical["minutes"]), fill="nan")
        return cls(
            patient_id=patient_id,
            start=datetime.fromisoformat(clinical["start"]),
            body_weight_kg=clinical.get("body_weight_kg"),
            age_years=clinical.get("age_years"),
            eating_rate_g_per_min=rate,
            **series,
        )


@dataclass(frozen=True)
class Event:
    """One value read from a file, before it is put on a patient's minute grid."""

    time: datetime  # timezone-aware
    field: str  # one of RANGES
    value: float
    where: str  # "line 12" or "entry 7 (Observation/abc)", for error messages


def check_range(field: str, value: float) -> str | None:
    """Why `value` cannot be a `field`, or None if it can."""
    low, high = RANGES[field]
    if not np.isfinite(value):
        return f"{field} is not a finite number"
    if not low <= value <= high:
        return f"{field} = {value:g} is outside [{low:g}, {high:g}]"
    return None


def build_record(patient_id: str, events: list[Event], problems: list[str]) -> DiabetesRecord | None:
    """A patient's events on a minute grid from the first event's minute; problems are appended, not raised."""
    timed = [e for e in events if e.field not in STATIC_FIELDS]
    if not timed:
        problems.append(f"patient {patient_id}: no CGM, carbohydrate or insulin values")
        return None
    start = min(e.time for e in timed).replace(second=0, microsecond=0)
    minutes = int((max(e.time for e in timed) - start).total_seconds() // 60) + 1
    if minutes > MAX_RECORD_DAYS * 24 * 60:
        problems.append(f"patient {patient_id}: the values span {minutes / 1440:.0f} days; at most {MAX_RECORD_DAYS} per import")
        return None
    cgm = np.full(minutes, np.nan)
    carbs, bolus = np.zeros(minutes), np.zeros(minutes)
    rate = np.full(minutes, np.nan)
    basal_changes: dict[int, tuple[float, str]] = {}
    weight, age = None, None
    for e in sorted(events, key=lambda e: e.time):
        if e.field == "body_weight_kg":
            weight = e.value
            continue
        if e.field == "age_years":
            if age is not None and age[0] != e.value:
                problems.append(f"{e.where}: patient {patient_id} has two different ages, {age[0]:g} and {e.value:g} "
                                f"(also {age[1]}); age_years is the age at the record's start")
            age = (e.value, e.where)
            continue
        minute = int((e.time - start).total_seconds() // 60)
        if e.field == "cgm_mgdl":
            if np.isfinite(cgm[minute]) and cgm[minute] != e.value:
                problems.append(f"{e.where}: patient {patient_id} has two different CGM readings in minute {e.time:%Y-%m-%dT%H:%M}Z")
            cgm[minute] = e.value
        elif e.field == "carbs_g":
            carbs[minute] += e.value
        elif e.field == "bolus_u":
            bolus[minute] += e.value
        elif e.field == "eating_rate_g_per_min":
            rate[minute] = e.value
        else:
            previous = basal_changes.get(minute)
            if previous is not None and previous[0] != e.value:
                problems.append(f"{e.where}: patient {patient_id} has two different basal rates from {e.time:%Y-%m-%dT%H:%M}Z "
                                f"(also {previous[1]})")
            basal_changes[minute] = (e.value, e.where)
    basal = np.zeros(minutes)
    for minute in sorted(basal_changes):
        basal[minute:] = basal_changes[minute][0]
    return DiabetesRecord(patient_id=patient_id, start=start.astimezone(timezone.utc), cgm_mgdl=cgm, carbs_g=carbs,
                          bolus_u=bolus, basal_u_per_h=basal, body_weight_kg=weight,
                          eating_rate_g_per_min=rate if np.isfinite(rate).any() else None,
                          age_years=None if age is None else age[0])


def parse_time(text: str) -> datetime:
    """An ISO 8601 date-time with a time zone (Z or an offset); ValueError says why not."""
    text = str(text).strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add Z for UTC or an offset such as +01:00)")
    return moment.astimezone(timezone.utc)
