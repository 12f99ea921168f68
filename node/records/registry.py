"""The registry of record readers: each reads one format of one record kind; `import_file` picks the first
reader that accepts the file, lets the kind split the records into cohorts and hands them to the one writer.

Readers are tried in the order registered, readers that recognise their files by content first; the fallbacks
come last (heart-disease FHIR takes any other FHIR file: `.json`, `.ndjson` or text starting with `{`;
heart-disease CSV any other file). A FHIR file is parsed once (node/records/fhir_input.py `load`): choosing the
reader and reading share the parsed document. A twins FHIR file is one with CGM readings. A new kind of
record registers its kind (node/records/kinds.py) and its readers, which `register` puts ahead of the
fallbacks (docs/tasks.md, "Adding a task").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node.records import fhir_input, heart_csv, heart_fhir, twin_csv, twin_fhir
from node.records.base import ImportReport, Records
from node.records.kinds import DIABETES, HEART_DISEASE, RecordKind
from node.records.provenance import LOCAL_RECORD_SYSTEM
from node.records.writer import write_records
from node.store import Store
from node.vault import Vault


@dataclass(frozen=True)
class Reader:
    kind: str  # a registered RecordKind's name
    format: str  # "csv" or "fhir"
    accepts: Callable[[Path], bool]  # whether the file is this reader's (cheap: suffix, header, resource types)
    read: Callable[[Path, str], Records]  # (path, record prefix); RecordFileError lists every problem
    fallback: bool = False  # takes what no other reader takes: tried after every other reader


KINDS: dict[str, RecordKind] = {}
READERS: list[Reader] = []


def register_kind(kind: RecordKind) -> RecordKind:
    KINDS[kind.name] = kind
    return kind


def register(reader: Reader) -> Reader:
    if reader.kind not in KINDS:
        raise ValueError(f"register the record kind {reader.kind!r} before its readers")
    first_fallback = next((i for i, known in enumerate(READERS) if known.fallback), len(READERS))
    READERS.insert(len(READERS) if reader.fallback else first_fallback, reader)
    return reader


def reader_for(path: Path) -> Reader:
    path = Path(path)
    return next(reader for reader in READERS if reader.accepts(path))


def import_file(store: Store, vault: Vault, path: Path, *, record_prefix: str, cohort: str | None = None,
                record_system: str | None = None) -> ImportReport:
    """A FHIR file with CGM readings or a twins' CSV (header with patient_id, time and cgm_mgdl) holds diabetes
    records; any other file is read as heart-disease records (FHIR: Bundle of any type or NDJSON; else CSV).
    `cohort` ("train" or "test") applies to diabetes records.

    All or nothing for real errors: a RecordFileError lists every problem and nothing is written. What is not
    read is counted in the report (`skipped`), patients left out are listed with why (`patients`, `rejected`),
    and a record number already present is reported unchanged, updated or in conflict (node/records/writer.py).
    `record_system` is the identifier system of record numbers given without one (a CSV's; default
    node/records/provenance.py LOCAL_RECORD_SYSTEM): a record number is the same patient only under the same
    system."""
    path = Path(path)
    try:
        reader = reader_for(path)
        kind = KINDS[reader.kind]
        kind.check_cohort(path, cohort)
        records = reader.read(path, record_prefix)
    finally:
        fhir_input.forget()
    cohorts = kind.split([clinical for _, clinical in records], cohort)
    return write_records(store, vault, records, cohorts, kind=kind.name, source=path.name,
                         record_system=record_system or LOCAL_RECORD_SYSTEM)


def _is_fhir(path: Path) -> bool:
    return fhir_input.sniff(path)


def _is_twin_fhir(path: Path) -> bool:
    return _is_fhir(path) and twin_fhir.is_twin_bundle(path)


def _read_twin_fhir(path: Path, record_prefix: str) -> Records:
    try:
        document = fhir_input.load(path)
    except fhir_input.FhirFileError as exc:
        raise twin_csv.TwinFileError(str(exc)) from None
    found, skipped, rejected = twin_fhir.read_twin_document(document, record_prefix=record_prefix)
    records = _as_records(found, format=document.format)
    records.skipped.update(skipped)
    records.rejected.extend(rejected)
    return records


def _as_records(found, *, format: str) -> Records:
    """Diabetes records (node/records/twin_csv.py DiabetesRecords) as (record number, clinical fields)."""
    records = Records(((record.patient_id, record.to_clinical()) for record in found), format=format)
    records.provenance.update(getattr(found, "provenance", {}))
    records.systems.update(getattr(found, "systems", {}))
    return records


def _diabetes(read) -> Callable[[Path, str], Records]:
    return lambda path, record_prefix: _as_records(read(path), format="csv")


register_kind(HEART_DISEASE)
register_kind(DIABETES)
register(Reader(DIABETES.name, "fhir", _is_twin_fhir, _read_twin_fhir))
register(Reader(DIABETES.name, "csv", lambda path: not _is_fhir(path) and twin_csv.is_twin_csv(path),
                _diabetes(twin_csv.read_twin_csv)))
register(Reader(HEART_DISEASE.name, "fhir", _is_fhir,
                lambda path, record_prefix: heart_fhir.read_bundle_file(path, record_prefix=record_prefix),
                fallback=True))
register(Reader(HEART_DISEASE.name, "csv", lambda path: True,
                lambda path, record_prefix: heart_csv.read_heart_disease_csv(path, record_prefix=record_prefix),
                fallback=True))
