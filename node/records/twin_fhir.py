"""Type 1 diabetes records (the twins' data) from FHIR R4 Bundles (fhir.resources.R4B): Patient, Observation,
MedicationAdministration.

What is read (anything else in the Bundle is ignored; entries with status entered-in-error, cancelled or
not-done are skipped):

- Patient: its `identifier[0].value` (else its `id`) is the hospital's record number for the patient.
- Observation, CGM glucose: LOINC 2339-0, 15074-8, 14743-9, 41653-7 or 99504-3; `valueQuantity` in UCUM
  `mg/dL` (or `mmol/L`, converted at 18.016 mg/dL per mmol/L); `effectiveDateTime` (or `effectiveInstant`).
- Observation, carbohydrate intake: LOINC 9059-7, `valueQuantity` in `g`.
- Observation, body weight: LOINC 29463-7, `valueQuantity` in `kg`.
- MedicationAdministration of insulin (a coding or text that says insulin, or SNOMED 67866001 / RxNorm
  insulin codes): a bolus is `dosage.dose` in `U` at `effectiveDateTime`; a basal rate is
  `dosage.rateQuantity` in `U/h` from `effectivePeriod.start` (or `effectiveDateTime`) on.
- `subject.reference` links each Observation and MedicationAdministration to a Patient of the Bundle
  (`Patient/<id>` or the Patient entry's `fullUrl`).

Times need a time zone. All or nothing: any bad entry rejects the file, and the error lists every problem
(file, entry number and resource, field, why).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from node.records.twin_csv import TwinFileError, records_from_events
from node.twins.records import DiabetesRecord, Event, check_range

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
GLUCOSE_CODES = {"2339-0", "15074-8", "14743-9", "41653-7", "99504-3"}
CARBS_CODES = {"9059-7"}
WEIGHT_CODES = {"29463-7"}
INSULIN_CODES = {"67866001", "5856", "86009", "51428", "274783", "139825", "253182", "400008"}
MGDL_PER_MMOLL = 18.016
SKIPPED_STATUSES = {"entered-in-error", "cancelled", "not-done", "stopped"}


class _Problem(Exception):
    pass


def _resource_classes():
    from fhir.resources.R4B.medicationadministration import MedicationAdministration
    from fhir.resources.R4B.observation import Observation
    from fhir.resources.R4B.patient import Patient

    return {"Patient": Patient, "Observation": Observation, "MedicationAdministration": MedicationAdministration}


def _codes(concept) -> set[tuple[str | None, str]]:
    return {(c.system, c.code) for c in (concept.coding or []) if c.code} if concept else set()


def _quantity(quantity, field: str, units: dict[str, float]) -> float:
    """The value of a Quantity in the first of `units` (UCUM code -> factor to it)."""
    if quantity is None or quantity.value is None:
        raise _Problem(f"{field} has no value")
    unit = quantity.code or quantity.unit
    if unit not in units:
        raise _Problem(f"{field} is in {unit!r}; expected {' or '.join(units)}")
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


def _events(resource, kind: str, where: str) -> list[Event]:
    def event(moment, field, value):
        why = check_range(field, value)
        if why:
            raise _Problem(why)
        return Event(moment, field, value, where)

    if kind == "Observation":
        loinc = {code for system, code in _codes(resource.code) if system == LOINC}
        if loinc & GLUCOSE_CODES:
            field, units = "cgm_mgdl", {"mg/dL": 1.0, "mmol/L": MGDL_PER_MMOLL}
        elif loinc & CARBS_CODES:
            field, units = "carbs_g", {"g": 1.0}
        elif loinc & WEIGHT_CODES:
            field, units = "body_weight_kg", {"kg": 1.0}
        else:
            return []  # an observation twins do not read
        moment = _moment(resource.effectiveDateTime or resource.effectiveInstant, "effectiveDateTime")
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


def is_twin_bundle(path: Path) -> bool:
    """Whether a JSON file is a Bundle with CGM or carbohydrate Observations or MedicationAdministrations
    (rather than, say, heart-disease Observations)."""
    try:
        bundle = json.loads(Path(path).read_text())
        entries = bundle.get("entry") or []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        if resource.get("resourceType") == "MedicationAdministration":
            return True
        if resource.get("resourceType") == "Observation":
            codings = ((resource.get("code") or {}).get("coding") or []) if isinstance(resource.get("code"), dict) else []
            if any(isinstance(c, dict) and c.get("code") in GLUCOSE_CODES | CARBS_CODES for c in codings):
                return True
    return False


def read_twin_bundle(path: Path) -> list[DiabetesRecord]:
    path = Path(path)
    try:
        bundle = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TwinFileError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TwinFileError(f"{path}: not JSON ({exc})") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise TwinFileError(f"{path}: not a FHIR Bundle (resourceType is {bundle.get('resourceType') if isinstance(bundle, dict) else type(bundle).__name__!r})")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list) or not entries:
        raise TwinFileError(f"{path}: the Bundle has no entries")
    classes = _resource_classes()
    problems: list[str] = []
    patients: dict[str, str] = {}  # reference ("Patient/x" or fullUrl) -> record number
    parsed = []
    for number, entry in enumerate(entries, start=1):
        raw = entry.get("resource") if isinstance(entry, dict) else None
        kind = raw.get("resourceType") if isinstance(raw, dict) else None
        where = f"entry {number} ({kind or '?'}/{raw.get('id', '?') if isinstance(raw, dict) else '?'})"
        if not isinstance(raw, dict):
            problems.append(f"{where}: the entry has no resource")
            continue
        if kind not in classes:
            continue
        try:
            resource = classes[kind].model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors()[:5]:
                field = ".".join(str(part) for part in error["loc"]) or "resource"
                problems.append(f"{where}: {field}: {error['msg']}")
            continue
        if kind == "Patient":
            number_ = (resource.identifier[0].value if resource.identifier else None) or resource.id
            if not number_:
                problems.append(f"{where}: the Patient has neither an identifier nor an id")
                continue
            if resource.id:
                patients[f"Patient/{resource.id}"] = number_
            if entry.get("fullUrl"):
                patients[str(entry["fullUrl"])] = number_
            continue
        parsed.append((where, kind, resource))
    events: dict[str, list[Event]] = {}
    for where, kind, resource in parsed:
        if str(resource.status) in SKIPPED_STATUSES:
            continue
        reference = resource.subject.reference if resource.subject else None
        if reference not in patients:
            problems.append(f"{where}: subject.reference {reference!r} names no Patient of this Bundle")
            continue
        try:
            found = _events(resource, kind, where)
        except _Problem as problem:
            problems.append(f"{where}: {problem}")
            continue
        if found:
            events.setdefault(patients[reference], []).extend(found)
    return records_from_events(
        path, events, problems, empty="the Bundle holds no CGM, carbohydrate or insulin values of its patients"
    )


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
        entries.append({"fullUrl": f"urn:uuid:patient-{pid}", "resource": {
            "resourceType": "Patient", "id": pid, "identifier": [{"system": "urn:twinledger:record", "value": r.patient_id}]}})

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
