"""The node-side readers the shipped tasks name in their `readers` (federation/tasks/*/): they need the node's
FHIR parser (fhir_input.py) or the twins' record builder (node/twins/records.py), which a task may not import.
Each returns `Records` (base.py)."""

from __future__ import annotations

from pathlib import Path

from node.records import fhir_input, heart_csv, heart_fhir, twin_csv, twin_fhir
from node.records.base import Records


def read_heart_csv(path: Path, record_prefix: str) -> Records:
    return heart_csv.read_heart_disease_csv(path, record_prefix=record_prefix)


def read_heart_fhir(path: Path, record_prefix: str) -> Records:
    return heart_fhir.read_bundle_file(path, record_prefix=record_prefix)


def is_twin_fhir(path: Path) -> bool:
    return fhir_input.sniff(path) and twin_fhir.is_twin_bundle(path)


def read_twin_fhir(path: Path, record_prefix: str) -> Records:
    try:
        document = fhir_input.load(path)
    except fhir_input.FhirFileError as exc:
        raise twin_csv.TwinFileError(str(exc)) from None
    found, skipped, rejected = twin_fhir.read_twin_document(document, record_prefix=record_prefix)
    records = _as_records(found, format=document.format)
    records.skipped.update(skipped)
    records.rejected.extend(rejected)
    return records


def read_twin_csv(path: Path, record_prefix: str) -> Records:
    return _as_records(twin_csv.read_twin_csv(path), format="csv")


def _as_records(found, *, format: str) -> Records:
    """Diabetes records (twin_csv.py DiabetesRecords) as (record number, clinical fields)."""
    records = Records(((record.patient_id, record.to_clinical()) for record in found), format=format)
    records.provenance.update(getattr(found, "provenance", {}))
    records.systems.update(getattr(found, "systems", {}))
    return records
