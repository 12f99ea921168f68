"""Heart-disease records from FHIR R4 Bundles of Patient and Observation resources (writing such Bundles:
node/records/heart_fhir_export.py).

A Bundle imports like a CSV file (node/records/heart_csv.py): all or nothing, a fresh random pseudonym per new
patient, records missing a value kept but marked incomplete, FLamby's split in Bundle order. Every
problem is listed with its entry number, resource and field, and nothing is written.

The mapping (docs/node.md, "Importing FHIR Bundles"):
- record number: the Patient identifier of type MR (HL7 v2-0203), else its only identifier, else
  `<prefix>-<position>` (position of the Patient among the Bundle's Patients, from 1);
- sex: Patient.gender, male 1, female 0 (other or unknown: missing);
- age: an Observation of LOINC 30525-0 in years (UCUM `a`), else whole years from Patient.birthDate to the
  latest effective date of the patient's Observations;
- the other fields: one Observation each, coded in LOINC where LOINC has the concept and in the local
  code system `LOCAL_SYSTEM` where it does not (`OBSERVATIONS` below); quantities must carry a UCUM unit.
An Observation with a dataAbsentReason and no value records a missing value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from pydantic import ValidationError

from federation.tasks.heart_disease import FIELD_RANGES, UCI_COLUMNS
from node.records.base import ImportReport, RecordFileError, problems_message
from node.records.heart_csv import store_heart_disease
from node.store import Store
from node.vault import Vault

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
LOCAL_SYSTEM = "urn:twinledger:codesystem:heart-disease"
V2_IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
MAX_RECORD_NUMBER = 64


class BundleError(RecordFileError):
    """The Bundle cannot be imported; the message lists every problem with its entry, resource and field."""


@dataclass(frozen=True)
class ObservationKind:
    field: str
    system: str
    code: str
    display: str
    value: str  # "quantity", "integer" or "boolean"
    units: dict[str, Callable[[float], float]] | None = None  # UCUM code -> conversion to the field's unit


def _same(value: float) -> float:
    return value


OBSERVATIONS = (
    ObservationKind("age", LOINC, "30525-0", "Age", "quantity", {"a": _same}),
    ObservationKind("trestbps", LOINC, "8480-6", "Systolic blood pressure (at rest)", "quantity", {"mm[Hg]": _same}),
    ObservationKind("chol", LOINC, "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "quantity",
                    {"mg/dL": _same, "mmol/L": lambda mmol: mmol * 38.67}),
    # Fasting glucose as measured: fbs is whether it exceeds 120 mg/dL (the UCI definition).
    ObservationKind("fbs", LOINC, "1558-6", "Fasting glucose [Mass/volume] in Serum or Plasma", "quantity",
                    {"mg/dL": lambda mg: float(mg > 120), "mmol/L": lambda mmol: float(mmol * 18.016 > 120)}),
    ObservationKind("thalach", LOINC, "8867-4", "Heart rate (maximum reached in the exercise test)", "quantity",
                    {"/min": _same}),
    ObservationKind("cp", LOCAL_SYSTEM, "cp", "Chest pain type (1 typical angina, 2 atypical angina, "
                    "3 non-anginal pain, 4 asymptomatic)", "integer"),
    ObservationKind("fbs", LOCAL_SYSTEM, "fbs", "Fasting blood sugar above 120 mg/dL", "boolean"),
    ObservationKind("restecg", LOCAL_SYSTEM, "restecg", "Resting ECG (0 normal, 1 ST-T wave abnormality, "
                    "2 left ventricular hypertrophy)", "integer"),
    ObservationKind("exang", LOCAL_SYSTEM, "exang", "Exercise-induced angina", "boolean"),
    ObservationKind("oldpeak", LOCAL_SYSTEM, "oldpeak", "ST depression induced by exercise relative to rest",
                    "quantity", {"mm": _same}),
    ObservationKind("slope", LOCAL_SYSTEM, "slope", "Slope of the peak exercise ST segment (1 up, 2 flat, 3 down)",
                    "integer"),
    ObservationKind("ca", LOCAL_SYSTEM, "ca", "Major vessels coloured by fluoroscopy (0 to 3)", "integer"),
    ObservationKind("thal", LOCAL_SYSTEM, "thal", "Thallium scan (3 normal, 6 fixed defect, 7 reversible defect)",
                    "integer"),
    ObservationKind("num", LOCAL_SYSTEM, "num", "Angiographic diagnosis of heart disease (0 none, 1 to 4)", "integer"),
)
BY_CODE = {(kind.system, kind.code): kind for kind in OBSERVATIONS}
# What the exporter writes for each field (the first kind listed for it, except fbs: the flag, not a glucose value).
EXPORT_KIND = {kind.field: kind for kind in reversed(OBSERVATIONS) if kind.code != "1558-6"}
IMPORTED_STATUSES = {"final", "amended", "corrected"}
GENDER = {"male": 1.0, "female": 0.0, "other": None, "unknown": None}


@dataclass
class _PatientEntry:
    position: int  # among the Bundle's Patients, from 1
    label: str  # "entry 3 (Patient p1)"
    number: str
    sex: float | None
    birth: date | None
    values: dict[str, float | None]
    labels: dict[str, str]  # field -> label of the entry that set it
    dates: list[date]


def _label(index: int, resource: dict) -> str:
    kind = resource.get("resourceType", "resource") if isinstance(resource, dict) else "resource"
    ident = resource.get("id") if isinstance(resource, dict) else None
    return f"entry {index} ({kind}{' ' + str(ident) if ident else ''})"


def _validation_problem(label: str, exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "resource"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{label}: {where}: {first.get('msg', 'invalid')}{more}"


def _record_number(patient) -> str | None:
    identifiers = [i for i in (patient.identifier or []) if i.value]
    for identifier in identifiers:
        codings = identifier.type.coding if identifier.type and identifier.type.coding else []
        if any(c.system == V2_IDENTIFIER_TYPE and c.code == "MR" for c in codings):
            return identifier.value.strip()
    return identifiers[0].value.strip() if len(identifiers) == 1 else None


def _day(moment) -> date | None:
    if isinstance(moment, datetime):
        return moment.date()
    return moment if isinstance(moment, date) else None


def _observation_kind(observation, label: str, problems: list[str]) -> ObservationKind | None:
    codings = (observation.code.coding or []) if observation.code else []
    known = [BY_CODE[(c.system, c.code)] for c in codings if (c.system, c.code) in BY_CODE]
    if len(known) == 1:
        return known[0]
    if len({k.field for k in known}) > 1:
        problems.append(f"{label}: code: codes of different fields ({', '.join(k.field for k in known)})")
        return None
    if known:
        return known[0]
    shown = ", ".join(f"{c.system or '?'}|{c.code or '?'}" for c in codings) or "no coding"
    problems.append(f"{label}: code: unknown observation code ({shown}); expected LOINC "
                    f"{', '.join(k.code for k in OBSERVATIONS if k.system == LOINC)} or codes of {LOCAL_SYSTEM}")
    return None


def _observation_value(observation, kind: ObservationKind, label: str, problems: list[str]) -> tuple[bool, float | None]:
    """(ok, value in the field's unit); a dataAbsentReason without a value is a missing value."""
    field = f"{label}, field {kind.field}"
    given = [name for name in ("valueQuantity", "valueInteger", "valueBoolean", "valueString", "valueCodeableConcept",
                               "valueDateTime", "valuePeriod", "valueRange", "valueRatio", "valueSampledData",
                               "valueTime") if getattr(observation, name, None) is not None]
    if not given:
        if observation.dataAbsentReason is not None:
            return True, None
        problems.append(f"{field}: no value and no dataAbsentReason")
        return False, None
    expected = {"quantity": "valueQuantity", "integer": "valueInteger", "boolean": "valueBoolean"}[kind.value]
    if given != [expected]:
        problems.append(f"{field}: expected {expected}, got {', '.join(given)}")
        return False, None
    if kind.value == "boolean":
        return True, float(observation.valueBoolean)
    if kind.value == "integer":
        value = float(observation.valueInteger)
    else:
        quantity = observation.valueQuantity
        if quantity.value is None:
            problems.append(f"{field}: valueQuantity has no value")
            return False, None
        if quantity.system != UCUM or quantity.code not in kind.units:
            problems.append(f"{field}: unit {quantity.system or '?'}|{quantity.code or quantity.unit or '?'} is not "
                            f"accepted; expected UCUM {' or '.join(kind.units)}")
            return False, None
        value = kind.units[quantity.code](float(quantity.value))
    if not math.isfinite(value):
        problems.append(f"{field}: {value} is not a finite number")
        return False, None
    low, high = FIELD_RANGES[kind.field]
    if not low <= value <= high:
        problems.append(f"{field}: {value:g} is outside [{low}, {high}]")
        return False, None
    return True, value


def _whole_years(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def read_bundle(data: bytes | str, *, source: str, record_prefix: str) -> list[tuple[str, dict]]:
    """Parse and check a Bundle; returns (record number, clinical fields) per Patient in Bundle order."""
    from fhir.resources.R4B.observation import Observation as FhirObservation
    from fhir.resources.R4B.patient import Patient as FhirPatient

    try:
        document = json.loads(data.decode("utf-8-sig") if isinstance(data, bytes) else data)
    except UnicodeDecodeError:
        raise BundleError(f"{source}: not UTF-8 text") from None
    except RecursionError:
        raise BundleError(f"{source}: the JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        found = document.get("resourceType") if isinstance(document, dict) else type(document).__name__
        raise BundleError(f"{source}: expected a FHIR Bundle, got {found!r}")
    entries = document.get("entry", [])
    if not isinstance(entries, list):
        raise BundleError(f"{source}: Bundle.entry must be a list")
    problems: list[str] = []
    patients: list[_PatientEntry] = []
    by_reference: dict[str, _PatientEntry] = {}
    observations = []
    for index, entry in enumerate(entries, start=1):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            problems.append(f"entry {index}: no resource")
            continue
        label = _label(index, resource)
        kind = resource.get("resourceType")
        if kind not in ("Patient", "Observation"):
            problems.append(f"{label}: resource type {kind!r} is not imported; a Bundle holds Patient and Observation")
            continue
        try:
            parsed = (FhirPatient if kind == "Patient" else FhirObservation).model_validate(resource)
        except ValidationError as exc:
            problems.append(_validation_problem(label, exc))
            continue
        if kind == "Observation":
            observations.append((index, label, parsed))
            continue
        number = _record_number(parsed)
        patient = _PatientEntry(
            position=len(patients) + 1, label=label, number=number or f"{record_prefix}-{len(patients) + 1:05d}",
            sex=GENDER.get(parsed.gender) if parsed.gender else None, birth=parsed.birthDate, values={}, labels={},
            dates=[],
        )
        if number is None and parsed.identifier:
            problems.append(f"{label}: identifier: several identifiers and none of type MR (record number)")
        elif number is not None and not 0 < len(number) <= MAX_RECORD_NUMBER:
            problems.append(f"{label}: identifier: a record number has 1 to {MAX_RECORD_NUMBER} characters")
        if parsed.gender and parsed.gender not in GENDER:
            problems.append(f"{label}: gender: {parsed.gender!r} is not male, female, other or unknown")
        patients.append(patient)
        full_url = entry.get("fullUrl")
        for reference in ([full_url] if isinstance(full_url, str) and full_url else []) + (
                [f"Patient/{parsed.id}"] if parsed.id else []):
            if reference in by_reference:
                problems.append(f"{label}: {reference} names two Patients in this Bundle")
            by_reference[reference] = patient
    seen_numbers: dict[str, str] = {}
    for patient in patients:
        if patient.number in seen_numbers:
            problems.append(f"{patient.label}: record number {patient.number!r} repeats {seen_numbers[patient.number]}")
        seen_numbers.setdefault(patient.number, patient.label)
    for index, label, observation in observations:
        if observation.status == "entered-in-error":
            continue
        if observation.status not in IMPORTED_STATUSES:
            problems.append(f"{label}: status: {observation.status!r}; only final, amended or corrected results are imported")
            continue
        reference = observation.subject.reference if observation.subject else None
        patient = by_reference.get(reference or "")
        if patient is None:
            problems.append(f"{label}: subject: {reference or 'none'} is not a Patient of this Bundle")
            continue
        kind = _observation_kind(observation, label, problems)
        if kind is None:
            continue
        ok, value = _observation_value(observation, kind, label, problems)
        if not ok:
            continue
        if kind.field in patient.values:
            problems.append(f"{label}, field {kind.field}: {patient.label} already has it from {patient.labels[kind.field]}")
            continue
        patient.values[kind.field] = value
        patient.labels[kind.field] = label
        effective = _day(observation.effectiveDateTime) or _day(
            observation.effectivePeriod.start if observation.effectivePeriod else None)
        if effective:
            patient.dates.append(effective)
    records = []
    for patient in patients:
        clinical = {column: patient.values.get(column) for column in UCI_COLUMNS}
        clinical["sex"] = patient.sex
        if "age" not in patient.values and patient.birth and patient.dates:
            age = _whole_years(patient.birth, max(patient.dates))
            low, high = FIELD_RANGES["age"]
            if low <= age <= high:
                clinical["age"] = float(age)
            else:
                problems.append(f"{patient.label}, field age: birthDate {patient.birth} gives age {age} on "
                                f"{max(patient.dates)}, outside [{low}, {high}]")
        records.append((patient.number, clinical))
    if problems:
        raise BundleError(problems_message(source, problems))
    if not records:
        raise BundleError(f"{source}: the Bundle holds no Patient")
    return records


def import_bundle(store: Store, vault: Vault, data: bytes | str, *, source: str, record_prefix: str) -> ImportReport:
    return store_heart_disease(store, vault, read_bundle(data, source=source, record_prefix=record_prefix), source=source)


def read_bundle_file(path: Path, *, record_prefix: str) -> list[tuple[str, dict]]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    return read_bundle(data, source=path.name, record_prefix=record_prefix)


def import_bundle_file(store: Store, vault: Vault, path: Path, *, record_prefix: str) -> ImportReport:
    path = Path(path)
    return store_heart_disease(store, vault, read_bundle_file(path, record_prefix=record_prefix), source=path.name)
