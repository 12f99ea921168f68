"""Type 1 diabetes records (the twins' data) from FHIR R4 (fhir.resources.R4B) as EHRs send it: Bundles of any
type, NDJSON bulk exports (node/records/fhir_input.py). Mapping table: docs/fhir-mapping.md.

A file is a twins file only when it holds CGM readings (`is_twin_document`); a routine lab glucose is not CGM.
What is read (anything else is skipped and counted by kind in the import report):

- Patient: the record number by node/records/fhir_input.py `patient_identity` (MR first, never a national
  identifier; two Patients sharing a value under different systems are different patients, both rejected);
  `birthDate` (optional) gives the age in whole years at the record's start (a date to the year or month counts
  from its first day); a Patient without it has no age (the glucose task's age groups leave it out).
- Observation, CGM glucose, per the HL7 CGM implementation guide: LOINC 99504-3 (mass, UCUM `mg/dL`) or
  105272-9 (molar, UCUM `mmol/L`, converted at 18.016 mg/dL per mmol/L); at `effectiveDateTime` (or
  `effectiveInstant`, or an `effectivePeriod` with one start and no other end). A reading with a
  `dataAbsentReason` and no value (the guide allows it) is skipped and counted. Lab and meter glucose (2339-0,
  2345-7, 15074-8, 14743-9, 41653-7) is not CGM: skipped and counted.
- Observation, carbohydrate intake: LOINC 9059-7, `g`; body weight: LOINC 29463-7, `kg`.
- MedicationAdministration of insulin (a coding or text that says insulin, or SNOMED 67866001 / RxNorm
  insulin codes): a bolus is `dosage.dose` in `U` at `effectiveDateTime`; a basal rate is
  `dosage.rateQuantity` in `U/h` from `effectivePeriod.start` (or `effectiveDateTime`) on.
- Quantities must be UCUM (system http://unitsofmeasure.org); comparators and results that are not final,
  amended or corrected are refused; entered-in-error, cancelled, not-done and stopped are skipped.

Times need a time zone. All or nothing for real errors: any bad entry rejects the file, and the error lists every
problem (file, entry number and resource, field, why).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from node.records import fhir_input
from node.records.fhir_input import FhirDocument, FhirFileError
from node.records.provenance import LOCAL_RECORD_SYSTEM
from node.records.twin_csv import TwinFileError, records_from_events, report_problems
from node.twins.records import DiabetesRecord, Event, check_range

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CGM_MASS, CGM_MOLAR = "99504-3", "105272-9"
CGM_CODES = {CGM_MASS, CGM_MOLAR}
GLUCOSE_CODES = CGM_CODES  # kept for callers: what counts as CGM
LAB_GLUCOSE_CODES = {"2339-0", "2345-7", "15074-8", "14743-9", "41653-7", "1558-6", "14771-0"}
CARBS_CODES = {"9059-7"}
WEIGHT_CODES = {"29463-7"}
INSULIN_CODES = {"67866001", "5856", "86009", "51428", "274783", "139825", "253182", "400008"}
MGDL_PER_MMOLL = 18.016
SKIPPED_STATUSES = {"entered-in-error", "cancelled", "not-done", "stopped"}
IMPORTED_STATUSES = {"final", "amended", "corrected", "completed", "in-progress"}


class _Problem(Exception):
    pass


class _Absent(Exception):
    pass


def _resource_classes():
    from fhir.resources.R4B.medicationadministration import MedicationAdministration
    from fhir.resources.R4B.observation import Observation
    from fhir.resources.R4B.patient import Patient

    return {"Patient": Patient, "Observation": Observation, "MedicationAdministration": MedicationAdministration}


def _codes(concept) -> set[tuple[str | None, str]]:
    return {(c.system, c.code) for c in (concept.coding or []) if c.code} if concept else set()


def _quantity(quantity, field: str, units: dict[str, float]) -> float:
    """The value of a UCUM Quantity in the first of `units` (UCUM code -> factor to it)."""
    if quantity is None or quantity.value is None:
        raise _Problem(f"{field} has no value")
    if quantity.comparator:
        raise _Problem(f"{field} is {quantity.comparator}{quantity.value}, not an exact value; comparators are refused")
    unit = quantity.code or quantity.unit
    if unit not in units:
        raise _Problem(f"{field} is in {unit!r}; expected {' or '.join(units)}")
    if quantity.system != UCUM:
        raise _Problem(f"{field} unit {unit!r} is not coded in UCUM (system {quantity.system or 'missing'}; "
                       f"expected {UCUM})")
    return float(quantity.value) * units[unit]


def _moment(value, field: str):
    from datetime import datetime, timezone

    if value is None:
        raise _Problem(f"{field} is missing")
    if not isinstance(value, datetime):
        raise _Problem(f"{field} is {value!s}, not a date-time to the minute")
    if value.tzinfo is None:
        raise _Problem(f"{field} has no time zone")
    return value.astimezone(timezone.utc)


def _is_insulin(resource) -> bool:
    concept = resource.medicationCodeableConcept
    if concept is None:
        return resource.medicationReference is not None and "insulin" in str(resource.medicationReference.display or "").lower()
    words = " ".join([concept.text or ""] + [c.display or "" for c in concept.coding or []]).lower()
    return "insulin" in words or any(code in INSULIN_CODES for _, code in _codes(concept))


def _observation_time(resource):
    period = resource.effectivePeriod
    if resource.effectiveDateTime or resource.effectiveInstant or period is None:
        return _moment(resource.effectiveDateTime or resource.effectiveInstant, "effectiveDateTime")
    if period.end is not None and period.end != period.start:
        raise _Problem("effectivePeriod spans time; a reading is at one time (effectiveDateTime)")
    return _moment(period.start, "effectivePeriod.start")


def _events(resource, kind: str, where: str) -> list[Event]:
    def event(moment, field, value):
        why = check_range(field, value)
        if why:
            raise _Problem(why)
        return Event(moment, field, value, where)

    if kind == "Observation":
        loinc = {code for system, code in _codes(resource.code) if system == LOINC}
        if loinc & CGM_CODES:
            field, units = "cgm_mgdl", {"mg/dL": 1.0, "mmol/L": MGDL_PER_MMOLL}
        elif loinc & CARBS_CODES:
            field, units = "carbs_g", {"g": 1.0}
        elif loinc & WEIGHT_CODES:
            field, units = "body_weight_kg", {"kg": 1.0}
        else:
            return []
        if resource.status not in IMPORTED_STATUSES:
            raise _Problem(f"status {resource.status!r}; only final, amended or corrected results are imported")
        if resource.valueQuantity is None and resource.dataAbsentReason is not None:
            raise _Absent()
        moment = _observation_time(resource)
        return [event(moment, field, _quantity(resource.valueQuantity, "valueQuantity", units))]
    if not _is_insulin(resource):
        raise _Problem("the medication is not recognisably insulin (no coding or text saying insulin)")
    dosage = resource.dosage
    if dosage is None or (dosage.dose is None) == (dosage.rateQuantity is None):
        raise _Problem("dosage must have either dose (a bolus, U) or rateQuantity (a basal rate, U/h)")
    if dosage.dose is not None:
        moment = _moment(resource.effectiveDateTime or (resource.effectivePeriod and resource.effectivePeriod.start),
                         "effectiveDateTime")
        return [event(moment, "bolus_u", _quantity(dosage.dose, "dosage.dose", {"U": 1.0, "[iU]": 1.0}))]
    moment = _moment((resource.effectivePeriod and resource.effectivePeriod.start) or resource.effectiveDateTime,
                     "effectivePeriod.start")
    return [event(moment, "basal_u_per_h", _quantity(dosage.rateQuantity, "dosage.rateQuantity",
                                                      {"U/h": 1.0, "[iU]/h": 1.0}))]


def _loinc_codes(resource: dict) -> set[str]:
    concept = resource.get("code")
    codings = concept.get("coding") or [] if isinstance(concept, dict) else []
    return {c.get("code") for c in codings if isinstance(c, dict) and c.get("system") == LOINC}


def is_twin_document(document: FhirDocument) -> bool:
    """Whether a parsed FHIR file holds CGM readings (LOINC 99504-3 or 105272-9): only then is it a twins file."""
    return any(_loinc_codes(e.resource) & CGM_CODES for e in document.of_type("Observation"))


def is_twin_bundle(path: Path) -> bool:
    try:
        return is_twin_document(fhir_input.load(path))
    except (FhirFileError, OSError):
        return False


def read_twin_document(document: FhirDocument, *, record_prefix: str = "P"
                       ) -> tuple[list[DiabetesRecord], Counter, list[tuple[str, str]]]:
    """(records, skipped by kind, rejected patients with why); TwinFileError lists every problem."""
    source = document.source
    classes = _resource_classes()
    problems: list[str] = list(document.problems)
    skipped: Counter = Counter(document.skipped)
    rejected: list[tuple[str, str]] = []
    patients: dict[str, str | None] = {}  # reference ("Patient/x" or fullUrl) -> record number (None: rejected)
    numbers: dict[str, tuple[str, str]] = {}  # record number -> (system, where)
    births: dict[str, tuple[str, str]] = {}  # record number -> (birthDate as written, where)
    parsed = []
    for entry in document.entries:
        raw, where = entry.resource, entry.label
        kind = raw.get("resourceType")
        if kind not in classes:
            skipped[str(kind)] += 1
            continue
        if kind == "Observation":
            loinc = _loinc_codes(raw)
            if not loinc & (CGM_CODES | CARBS_CODES | WEIGHT_CODES):
                skipped["Observation " + ("lab or meter glucose (not CGM)" if loinc & LAB_GLUCOSE_CODES
                                          else "(a code the twins do not read)")] += 1
                continue
        if str(raw.get("status")) in SKIPPED_STATUSES:
            skipped[f"{kind} {raw.get('status')}"] += 1
            continue
        try:
            resource = classes[kind].model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors()[:5]:
                field = ".".join(str(part) for part in error["loc"]) or "resource"
                problems.append(f"{where}: {field}: {error['msg']}")
            continue
        if kind == "Patient":
            identity = fhir_input.patient_identity(raw, record_prefix=record_prefix)
            number = identity.number
            if number is None:
                rejected.append((where, identity.why))
            elif number in numbers and numbers[number][0] != identity.system:
                why = (f"identifier value {number!r} is also {numbers[number][1]}'s under another system: two different "
                       "patients, neither imported; give them distinct medical record numbers (type MR)")
                rejected += [(numbers[number][1], why), (where, why)]
                numbers[number] = (None, where)  # the first one is rejected too (below)
                number = None
            elif number in numbers:
                problems.append(f"{where}: record number {number!r} repeats {numbers[number][1]}")
                continue
            else:
                numbers[number] = (identity.system, where)
            if number is not None and raw.get("birthDate"):
                births[number] = (str(raw["birthDate"]), where)
            for reference in fhir_input.references(entry, resource.id):
                patients[reference] = number
            continue
        parsed.append((where, kind, resource))
    collided = {number for number, (system, _) in numbers.items() if system is None}
    patients = {ref: (None if number in collided else number) for ref, number in patients.items()}
    events: dict[str, list[Event]] = {}
    for where, kind, resource in parsed:
        reference = resource.subject.reference if resource.subject else None
        reference = reference if reference in patients else fhir_input.reference_key(reference)
        if reference not in patients:
            problems.append(f"{where}: subject.reference {reference!r} names no Patient of this file")
            continue
        try:
            found = _events(resource, kind, where)
        except _Absent:
            skipped["Observation CGM reading without a value (dataAbsentReason)"] += 1
            continue
        except _Problem as problem:
            problems.append(f"{where}: {problem}")
            continue
        if found and patients[reference] is not None:
            events.setdefault(patients[reference], []).extend(found)
    if not problems and not events and rejected:
        return [], skipped, rejected  # every patient left out, each with why: the report says so
    records = records_from_events(
        source, events, problems, empty="the file holds no CGM, carbohydrate or insulin values of its patients"
    )
    records.systems.update({number: system for number, (system, _) in numbers.items() if system})
    for i, record in enumerate(records):
        if record.patient_id in births:
            written, where = births[record.patient_id]
            try:
                records[i] = replace(record, age_years=age_at(written, record.start.date()))
            except _Problem as problem:
                problems.append(f"{where}: {problem}")
    if problems:
        raise report_problems(source, problems)
    return records, skipped, rejected


def age_at(birth_date: str, day: date) -> float:
    """Whole years from a FHIR birthDate (YYYY, YYYY-MM or YYYY-MM-DD; a partial date counts from its first day)
    to `day`; _Problem if it is not a date, after `day`, or outside RANGES."""
    parts = birth_date.split("-")
    try:
        born = date(int(parts[0]), int(parts[1]) if len(parts) > 1 else 1, int(parts[2]) if len(parts) > 2 else 1)
    except (ValueError, IndexError):
        raise _Problem(f"birthDate {birth_date!r} is not a date (YYYY, YYYY-MM or YYYY-MM-DD)") from None
    if born > day:
        raise _Problem(f"birthDate {birth_date} is after the record's start ({day})")
    years = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    why = check_range("age_years", float(years))
    if why:
        raise _Problem(f"birthDate {birth_date}: {why} at the record's start ({day})")
    return float(years)


def read_twin_bundle(path: Path) -> list[DiabetesRecord]:
    path = Path(path)
    try:
        document = fhir_input.load(path)
    except FhirFileError as exc:
        raise TwinFileError(str(exc)) from None
    if document.format == "bundle" and not document.entries and not document.problems:
        raise TwinFileError(f"{path}: the Bundle has no entries")
    return read_twin_document(document)[0]


def write_twin_bundle(records: list[DiabetesRecord], path: Path) -> Path:
    """A FHIR R4 collection Bundle of these records (what `read_twin_bundle` reads)."""
    from datetime import timedelta

    import numpy as np

    def when(record, minute) -> str:
        return (record.start + timedelta(minutes=int(minute))).strftime("%Y-%m-%dT%H:%M:%SZ")

    def quantity(value, code):
        return {"value": round(float(value), 4), "unit": code, "system": UCUM, "code": code}

    entries = []
    for i, r in enumerate(records):
        pid = f"p{i + 1}"
        ref = {"reference": f"Patient/{pid}"}
        born = {} if r.age_years is None else {"birthDate": birth_date(r.start.date(), age_years=r.age_years)}
        entries.append({"fullUrl": f"urn:uuid:patient-{pid}", "resource": {
            "resourceType": "Patient", "id": pid, "identifier": [{"system": LOCAL_RECORD_SYSTEM, "value": r.patient_id}],
            **born}})

        def observation(code, display, minute, value, unit):
            return {"resourceType": "Observation", "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": code, "display": display}]}, "subject": ref,
                    "effectiveDateTime": when(r, minute), "valueQuantity": quantity(value, unit)}

        def insulin(minute, dosage, period=False):
            timing = {"effectivePeriod": {"start": when(r, minute)}} if period else {"effectiveDateTime": when(r, minute)}
            return {"resourceType": "MedicationAdministration", "status": "completed",
                    "medicationCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "67866001",
                                                              "display": "Insulin"}], "text": "insulin"},
                    "subject": ref, **timing, "dosage": dosage}

        resources = []
        if r.body_weight_kg is not None:
            resources.append(observation("29463-7", "Body weight", 0, r.body_weight_kg, "kg"))
        resources += [observation("99504-3", "Glucose [Mass/volume] in Interstitial fluid", m, r.cgm_mgdl[m], "mg/dL")
                      for m in np.flatnonzero(np.isfinite(r.cgm_mgdl))]
        resources += [observation("9059-7", "Carbohydrate intake Estimated", m, r.carbs_g[m], "g")
                      for m in np.flatnonzero(r.carbs_g > 0)]
        resources += [insulin(m, {"dose": quantity(r.bolus_u[m], "U")}) for m in np.flatnonzero(r.bolus_u > 0)]
        change = np.ones(r.minutes, dtype=bool)
        change[1:] = r.basal_u_per_h[1:] != r.basal_u_per_h[:-1]
        resources += [insulin(m, {"rateQuantity": quantity(r.basal_u_per_h[m], "U/h")}, period=True)
                      for m in np.flatnonzero(change)]
        entries += [{"resource": resource} for resource in resources]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    return path


def birth_date(day: date, *, age_years: float) -> str:
    """A birthDate at which someone is `age_years` (whole years) old on `day`: their birthday that day (28 February
    for 29 February), so that `age_at` reads the age back."""
    year = day.year - int(age_years)
    return (date(year, 2, 28) if (day.month, day.day) == (2, 29) else day.replace(year=year)).isoformat()
