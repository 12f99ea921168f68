"""Heart-disease records from FHIR R4 as EHRs send it (node/records/fhir_input.py: Bundles of any type, NDJSON
bulk exports, a UTF-8 BOM); writing such Bundles: node/records/heart_fhir_export.py.

The mapping table a hospital's interface team implements from is docs/fhir-mapping.md. In short:
- record number: node/records/fhir_input.py `patient_identity` (MR first, never a national identifier);
- sex: Patient.gender, male 1, female 0 (other or unknown: missing);
- age: LOINC 30525-0 in years, else whole years from Patient.birthDate to the record's index date;
- trestbps: LOINC 8480-6 (systolic), alone or as a component of the panels 55284-4 / 85354-9;
- chol: LOINC 2093-3 (mg/dL) or 14647-2 (mmol/L); fbs: LOINC 1558-6 (mg/dL) or 14771-0 (mmol/L), checked in
  its unit (`MEASURED`) before it becomes the flag "above 120 mg/dL";
- thalach (the MAXIMUM heart rate of an exercise test) and the other exercise-test and angiography fields: the
  local code system `LOCAL_SYSTEM`. A heart rate (8867-4) is a resting rate: never thalach, skipped and counted.
- Anything else (other resource types, other codes, random or lab glucose, the diastolic component) is skipped
  and counted by kind in the import report; never fatal.
- Repeated measurements: each field takes the latest value at or before the record's index date (the time of the
  patient's latest observation the task reads); the value's resource id, code and time go to the report's
  provenance, with how many other measurements were not used.
- Refused (the file is not imported, every problem listed): values out of range in their unit, non-UCUM or
  unexpected units, comparators (`<100`), results that are not final, amended or corrected (entered-in-error and
  cancelled are skipped), resources that are not valid FHIR R4, observations of patients not in the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from federation.tasks.heart_disease import FIELD_RANGES, UCI_COLUMNS
from node.records import fhir_input
from node.records.base import ImportReport, RecordFileError, Records, problems_message
from node.records.fhir_input import V2_IDENTIFIER_TYPE, FhirDocument, FhirFileError  # noqa: F401 (exporter)
from node.records.heart_csv import store_heart_disease
from node.store import Store
from node.vault import Vault

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
LOCAL_SYSTEM = "urn:twinledger:codesystem:heart-disease"
MAX_RECORD_NUMBER = fhir_input.MAX_RECORD_NUMBER
MGDL_PER_MMOLL_GLUCOSE = 18.016
MGDL_PER_MMOLL_CHOLESTEROL = 38.67
BP_PANELS = {"55284-4", "85354-9"}
SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"


class BundleError(RecordFileError):
    """The file cannot be imported; the message lists every problem with its entry, resource and field."""


def _same(value: float) -> float:
    return value


@dataclass(frozen=True)
class ObservationKind:
    field: str
    system: str
    code: str
    display: str
    value: str  # "quantity", "integer" or "boolean"
    units: dict[str, float] | None = None  # UCUM code -> factor to the measured unit (the first)
    measured: tuple[float, float] | None = None  # what a value may be in the measured unit, before any derivation
    derive: Callable[[float], float] = _same  # measured value -> the field's value


OBSERVATIONS = (
    ObservationKind("age", LOINC, "30525-0", "Age", "quantity", {"a": 1.0}, (0, 120)),
    ObservationKind("trestbps", LOINC, SYSTOLIC, "Systolic blood pressure (at rest)", "quantity", {"mm[Hg]": 1.0},
                    (0, 300)),
    ObservationKind("chol", LOINC, "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "quantity",
                    {"mg/dL": 1.0, "mmol/L": MGDL_PER_MMOLL_CHOLESTEROL}, (0, 1000)),
    ObservationKind("chol", LOINC, "14647-2", "Cholesterol [Moles/volume] in Serum or Plasma", "quantity",
                    {"mg/dL": 1.0, "mmol/L": MGDL_PER_MMOLL_CHOLESTEROL}, (0, 1000)),
    # Fasting glucose as measured, checked in mg/dL; fbs is whether it exceeds 120 mg/dL (the UCI definition).
    ObservationKind("fbs", LOINC, "1558-6", "Fasting glucose [Mass/volume] in Serum or Plasma", "quantity",
                    {"mg/dL": 1.0, "mmol/L": MGDL_PER_MMOLL_GLUCOSE}, (10, 2000), lambda mg: float(mg > 120)),
    ObservationKind("fbs", LOINC, "14771-0", "Fasting glucose [Moles/volume] in Serum or Plasma", "quantity",
                    {"mg/dL": 1.0, "mmol/L": MGDL_PER_MMOLL_GLUCOSE}, (10, 2000), lambda mg: float(mg > 120)),
    ObservationKind("thalach", LOCAL_SYSTEM, "thalach", "Maximum heart rate reached in the exercise test",
                    "quantity", {"/min": 1.0}, (0, 300)),
    ObservationKind("cp", LOCAL_SYSTEM, "cp", "Chest pain type (1 typical angina, 2 atypical angina, "
                    "3 non-anginal pain, 4 asymptomatic)", "integer"),
    ObservationKind("fbs", LOCAL_SYSTEM, "fbs", "Fasting blood sugar above 120 mg/dL", "boolean"),
    ObservationKind("restecg", LOCAL_SYSTEM, "restecg", "Resting ECG (0 normal, 1 ST-T wave abnormality, "
                    "2 left ventricular hypertrophy)", "integer"),
    ObservationKind("exang", LOCAL_SYSTEM, "exang", "Exercise-induced angina", "boolean"),
    ObservationKind("oldpeak", LOCAL_SYSTEM, "oldpeak", "ST depression induced by exercise relative to rest",
                    "quantity", {"mm": 1.0}, (-10, 10)),
    ObservationKind("slope", LOCAL_SYSTEM, "slope", "Slope of the peak exercise ST segment (1 up, 2 flat, 3 down)",
                    "integer"),
    ObservationKind("ca", LOCAL_SYSTEM, "ca", "Major vessels coloured by fluoroscopy (0 to 3)", "integer"),
    ObservationKind("thal", LOCAL_SYSTEM, "thal", "Thallium scan (3 normal, 6 fixed defect, 7 reversible defect)",
                    "integer"),
    ObservationKind("num", LOCAL_SYSTEM, "num", "Angiographic diagnosis of heart disease (0 none, 1 to 4)", "integer"),
)
BY_CODE = {(kind.system, kind.code): kind for kind in OBSERVATIONS}
# Codes an EHR sends that look close to a field but are not it: skipped with the reason, never read.
NOT_READ = {
    (LOINC, "8867-4"): "heart rate (a resting rate, not thalach, the exercise-test maximum)",
    (LOINC, "2339-0"): "glucose in blood (not fasting: not fbs)",
    (LOINC, "2345-7"): "glucose in serum or plasma (not fasting: not fbs)",
    (LOINC, "15074-8"): "glucose [moles/volume] in blood (not fasting: not fbs)",
    (LOINC, DIASTOLIC): "diastolic blood pressure (not read)",
}
# What the exporter writes for each field (the first kind listed for it, except fbs: the flag, not a glucose value).
EXPORT_KIND = {kind.field: kind for kind in reversed(OBSERVATIONS) if kind.code not in ("1558-6", "14771-0", "14647-2")}
IMPORTED_STATUSES = {"final", "amended", "corrected"}
SKIPPED_STATUSES = {"entered-in-error", "cancelled"}
GENDER = {"male": 1.0, "female": 0.0, "other": None, "unknown": None}
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


@dataclass
class _Candidate:
    moment: datetime | None
    value: float | None  # None: a dataAbsentReason
    label: str
    ident: str | None
    system: str
    code: str


@dataclass
class _PatientEntry:
    label: str  # "entry 3 (Patient p1)"
    number: str | None
    system: str | None
    sex: float | None
    birth: date | None
    candidates: dict[str, list[_Candidate]] = field(default_factory=dict)
    rejected: str = ""
    ident: str | None = None  # the Patient resource's id


def _validation_problem(label: str, exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "resource"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{label}: {where}: {first.get('msg', 'invalid')}{more}"


def _moment(value) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    return None


def _codings(concept) -> list[tuple[str | None, str | None]]:
    if not isinstance(concept, dict):
        return []
    return [(c.get("system"), c.get("code")) for c in concept.get("coding") or [] if isinstance(c, dict)]


def _kind_of(codings, label: str, problems: list[str]) -> ObservationKind | None:
    known = [BY_CODE[c] for c in codings if c in BY_CODE]
    if len({k.field for k in known}) > 1:
        problems.append(f"{label}: code: codes of different fields ({', '.join(k.field for k in known)})")
        return None
    return known[0] if known else None


def _skip_key(codings) -> str:
    for coding in codings:
        if coding in NOT_READ:
            return f"Observation {coding[1]}: {NOT_READ[coding]}"
    system, code = codings[0] if codings else (None, None)
    return f"Observation {code or 'without code'}" + (" (unknown code)" if code else "")


def _value(holder, kind: ObservationKind, label: str, problems: list[str]) -> tuple[bool, float | None]:
    """(ok, the field's value); a dataAbsentReason without a value is a missing value."""
    where = f"{label}, field {kind.field}"
    given = [name for name in ("valueQuantity", "valueInteger", "valueBoolean", "valueString", "valueCodeableConcept",
                               "valueDateTime", "valuePeriod", "valueRange", "valueRatio", "valueSampledData",
                               "valueTime") if getattr(holder, name, None) is not None]
    if not given:
        if holder.dataAbsentReason is not None:
            return True, None
        problems.append(f"{where}: no value and no dataAbsentReason")
        return False, None
    expected = {"quantity": "valueQuantity", "integer": "valueInteger", "boolean": "valueBoolean"}[kind.value]
    if given != [expected]:
        problems.append(f"{where}: expected {expected}, got {', '.join(given)}")
        return False, None
    if kind.value == "boolean":
        return True, float(holder.valueBoolean)
    if kind.value == "integer":
        value = float(holder.valueInteger)
        low, high = FIELD_RANGES[kind.field]
        if not low <= value <= high:
            problems.append(f"{where}: {value:g} is outside [{low}, {high}]")
            return False, None
        return True, value
    quantity = holder.valueQuantity
    if quantity.value is None:
        problems.append(f"{where}: valueQuantity has no value")
        return False, None
    if quantity.comparator:
        problems.append(f"{where}: the value is {quantity.comparator}{quantity.value}, not an exact value; "
                        "comparators are refused")
        return False, None
    if quantity.system != UCUM or quantity.code not in kind.units:
        problems.append(f"{where}: unit {quantity.system or '?'}|{quantity.code or quantity.unit or '?'} is not "
                        f"accepted; expected UCUM {' or '.join(kind.units)}")
        return False, None
    measured = float(quantity.value) * kind.units[quantity.code]
    unit = next(iter(kind.units))
    if not math.isfinite(measured):
        problems.append(f"{where}: {measured} is not a finite number")
        return False, None
    low, high = kind.measured
    if not low <= measured <= high:
        shown = f"{float(quantity.value):g} {quantity.code}" + (f" ({measured:g} {unit})" if quantity.code != unit else "")
        problems.append(f"{where}: {shown} is outside [{low:g}, {high:g}] {unit}")
        return False, None
    return True, kind.derive(measured)


def _whole_years(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def read_document(document: FhirDocument, *, record_prefix: str) -> Records:
    """The heart-disease records of a parsed FHIR file; BundleError lists every problem (nothing is imported)."""
    from fhir.resources.R4B.observation import Observation as FhirObservation
    from fhir.resources.R4B.patient import Patient as FhirPatient

    source = document.source
    records = Records(format=document.format)
    records.skipped.update(document.skipped)
    problems: list[str] = list(document.problems)
    patients: list[_PatientEntry] = []
    by_reference: dict[str, _PatientEntry] = {}
    observations = []
    for entry in document.entries:
        kind = entry.resource.get("resourceType")
        if kind == "Observation":
            observations.append(entry)
            continue
        if kind != "Patient":
            records.skipped[str(kind)] += 1
            continue
        try:
            parsed = FhirPatient.model_validate(entry.resource)
        except ValidationError as exc:
            problems.append(_validation_problem(entry.label, exc))
            continue
        identity = fhir_input.patient_identity(entry.resource, record_prefix=record_prefix)
        patient = _PatientEntry(entry.label, identity.number, identity.system,
                                GENDER.get(parsed.gender) if parsed.gender else None, parsed.birthDate,
                                rejected=identity.why, ident=parsed.id)
        if parsed.gender and parsed.gender not in GENDER:
            problems.append(f"{entry.label}: gender: {parsed.gender!r} is not male, female, other or unknown")
        patients.append(patient)
        for reference in fhir_input.references(entry, parsed.id):
            if reference in by_reference and by_reference[reference] is not patient:
                problems.append(f"{entry.label}: {reference} names two Patients in this file")
            by_reference[reference] = patient
    seen: dict[str, _PatientEntry] = {}
    for patient in patients:
        if patient.number is None:
            continue
        other = seen.get(patient.number)
        if other is None:
            seen[patient.number] = patient
        elif other.system == patient.system:
            problems.append(f"{patient.label}: record number {patient.number!r} repeats {other.label}")
        else:
            why = (f"identifier value {patient.number!r} is also {other.label}'s under another system "
                   f"({other.system or 'resource id'} vs {patient.system or 'resource id'}): two different patients, "
                   "neither imported; give them distinct medical record numbers (type MR)")
            patient.rejected = other.rejected = why
    for entry in observations:
        resource = entry.resource
        codings = _codings(resource.get("code"))
        panel = any(system == LOINC and code in BP_PANELS for system, code in codings)
        kind = None if panel else _kind_of(codings, entry.label, problems)
        if kind is None and not panel:
            if not any(c in BY_CODE for c in codings):
                records.skipped[_skip_key(codings)] += 1
            continue
        status = resource.get("status")
        if status in SKIPPED_STATUSES:
            records.skipped[f"Observation {status}"] += 1
            continue
        try:
            observation = FhirObservation.model_validate(resource)
        except ValidationError as exc:
            problems.append(_validation_problem(entry.label, exc))
            continue
        if observation.status not in IMPORTED_STATUSES:
            problems.append(f"{entry.label}: status: {observation.status!r}; only final, amended or corrected "
                            "results are imported")
            continue
        reference = observation.subject.reference if observation.subject else None
        patient = by_reference.get(reference or "") or by_reference.get(fhir_input.reference_key(reference))
        if patient is None:
            problems.append(f"{entry.label}: subject: {reference or 'none'} is not a Patient of this file")
            continue
        moment = _moment(observation.effectiveDateTime) or _moment(observation.effectiveInstant) or _moment(
            observation.effectivePeriod.start if observation.effectivePeriod else None)
        parts = [(kind, observation, (kind.system, kind.code) if kind else None)] if kind else []
        for component in observation.component or [] if panel else []:
            ccodes = [(c.system, c.code) for c in (component.code.coding or [])]
            ckind = _kind_of(ccodes, entry.label, problems)
            if ckind is None:
                records.skipped["component " + _skip_key(ccodes).removeprefix("Observation ")] += 1
                continue
            parts.append((ckind, component, (ckind.system, ckind.code)))
        for part_kind, holder, (system, code) in parts:
            ok, value = _value(holder, part_kind, entry.label, problems)
            if ok:
                patient.candidates.setdefault(part_kind.field, []).append(
                    _Candidate(moment, value, entry.label, observation.id, system, code))
    for patient in patients:
        if patient.rejected:
            records.rejected.append((patient.number or patient.label, patient.rejected))
            continue
        moments = [c.moment for cs in patient.candidates.values() for c in cs if c.moment]
        index = max(moments) if moments else None
        clinical = {column: None for column in UCI_COLUMNS}
        clinical["sex"] = patient.sex
        provenance = {}
        for name, candidates in patient.candidates.items():
            usable = [c for c in candidates if index is None or c.moment is None or c.moment <= index]
            usable.sort(key=lambda c: c.moment or _EARLIEST)
            chosen = usable[-1]
            ties = {c.value for c in usable if (c.moment or _EARLIEST) == (chosen.moment or _EARLIEST)}
            if len(ties) > 1:
                problems.append(f"{chosen.label}, field {name}: {patient.label} has different values at the same time "
                                f"({chosen.moment.isoformat() if chosen.moment else 'no time'})")
                continue
            clinical[name] = chosen.value
            provenance[name] = {"resource": chosen.ident, "system": chosen.system, "code": chosen.code,
                                "time": chosen.moment.isoformat() if chosen.moment else None,
                                "not_used": len(candidates) - 1}
        if patient.sex is not None:
            provenance["sex"] = {"resource": patient.ident, "system": None, "code": "Patient.gender", "time": None,
                                 "not_used": 0}
        if clinical["age"] is None and "age" not in patient.candidates and patient.birth and index:
            age = _whole_years(patient.birth, index.date())
            low, high = FIELD_RANGES["age"]
            if low <= age <= high:
                clinical["age"] = float(age)
                provenance["age"] = {"resource": None, "system": None, "code": "Patient.birthDate",
                                     "time": index.isoformat(), "not_used": 0}
            else:
                problems.append(f"{patient.label}, field age: birthDate {patient.birth} gives age {age} on "
                                f"{index.date()}, outside [{low}, {high}]")
        records.append((patient.number, clinical))
        records.provenance[patient.number] = provenance
        if patient.system:
            records.systems[patient.number] = patient.system
    if problems:
        raise BundleError(problems_message(source, problems))
    if not patients:
        raise BundleError(f"{source}: the file holds no Patient")
    return records


def read_bundle(data: bytes | str, *, source: str, record_prefix: str) -> Records:
    """Parse and check a Bundle (or NDJSON); returns (record number, clinical fields) per Patient in file order."""
    try:
        document = fhir_input.parse(data, source=source)
    except FhirFileError as exc:
        raise BundleError(str(exc)) from None
    return read_document(document, record_prefix=record_prefix)


def import_bundle(store: Store, vault: Vault, data: bytes | str, *, source: str, record_prefix: str) -> ImportReport:
    return store_heart_disease(store, vault, read_bundle(data, source=source, record_prefix=record_prefix), source=source)


def read_bundle_file(path: Path, *, record_prefix: str) -> Records:
    path = Path(path)
    try:
        document = fhir_input.load(path)
    except FhirFileError as exc:
        raise BundleError(str(exc)) from None
    return read_document(document, record_prefix=record_prefix)


def import_bundle_file(store: Store, vault: Vault, path: Path, *, record_prefix: str) -> ImportReport:
    path = Path(path)
    return store_heart_disease(store, vault, read_bundle_file(path, record_prefix=record_prefix), source=path.name)
