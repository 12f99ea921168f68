"""Heart-disease records written as FHIR R4 Bundles (for tests and the demo): what node/records/heart_fhir.py reads."""

from __future__ import annotations

import json
import uuid
from datetime import date
from pathlib import Path

from federation.tasks.heart_disease import UCI_COLUMNS
from node.records.heart_csv import read_heart_disease_csv
from node.records.heart_fhir import EXPORT_KIND, UCUM, V2_IDENTIFIER_TYPE, ObservationKind


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _observation(kind: ObservationKind, value: float, *, subject: str, observed_on: date, ident: str) -> dict:
    resource = {
        "resourceType": "Observation",
        "id": ident,
        "status": "final",
        "code": {"coding": [{"system": kind.system, "code": kind.code, "display": kind.display}]},
        "subject": {"reference": subject},
        "effectiveDateTime": observed_on.isoformat(),
    }
    if kind.value == "boolean":
        resource["valueBoolean"] = bool(value)
    elif kind.value == "integer":
        resource["valueInteger"] = int(value)
    else:
        unit = next(iter(kind.units))
        resource["valueQuantity"] = {"value": _number(value), "unit": unit, "system": UCUM, "code": unit}
    return resource


def bundle_from_records(records: list[tuple[str, dict]], *, observed_on: date = date(1988, 6, 1)) -> dict:
    """A collection Bundle: per record, a Patient (identifier of type MR = the record number) and one
    Observation per present value. A whole-number age becomes a birthDate `age` years before `observed_on`;
    any other age an Observation of LOINC 30525-0. Resource ids derive from the record numbers."""
    entries = []
    for number, clinical in records:
        patient_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"twinledger:patient:{number}"))
        full_url = f"urn:uuid:{patient_id}"
        patient = {
            "resourceType": "Patient",
            "id": patient_id,
            "identifier": [{"type": {"coding": [{"system": V2_IDENTIFIER_TYPE, "code": "MR"}]}, "value": number}],
        }
        if clinical.get("sex") is not None:
            patient["gender"] = "male" if clinical["sex"] == 1 else "female"
        age = clinical.get("age")
        if age is not None and float(age).is_integer():
            born = observed_on.replace(year=observed_on.year - int(age), day=min(observed_on.day, 28))
            patient["birthDate"] = born.isoformat()
        entries.append({"fullUrl": full_url, "resource": patient})
        for field in UCI_COLUMNS:
            value = clinical.get(field)
            if field == "sex" or value is None or (field == "age" and float(value).is_integer()):
                continue
            ident = str(uuid.uuid5(uuid.NAMESPACE_URL, f"twinledger:observation:{number}:{field}"))
            entries.append({
                "fullUrl": f"urn:uuid:{ident}",
                "resource": _observation(EXPORT_KIND[field], value, subject=full_url, observed_on=observed_on, ident=ident),
            })
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def export_csv_as_bundle(csv_path: Path, out: Path, *, record_prefix: str) -> Path:
    """Write a heart-disease CSV file (as node/records/heart_csv.py reads it) as a FHIR R4 Bundle."""
    records = read_heart_disease_csv(Path(csv_path), record_prefix=record_prefix)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bundle_from_records(records), indent=1))
    return out
