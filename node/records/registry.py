"""The registry of record readers: each reads one format of one record kind; `import_file` picks the first
reader that accepts the file, lets the kind split the records into cohorts and hands them to the one writer.

Readers are tried in the order registered, readers that recognise their files by content first; the fallbacks
come last (heart-disease FHIR takes any other `.json` file, heart-disease CSV any other file). A new kind of
record registers its kind (node/records/kinds.py) and its readers, which `register` puts ahead of the
fallbacks (docs/tasks.md, "Adding a task").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node.records import heart_csv, heart_fhir, twin_csv, twin_fhir
from node.records.base import ImportReport
from node.records.kinds import DIABETES, HEART_DISEASE, RecordKind
from node.records.writer import write_records
from node.store import Store
from node.vault import Vault

Records = list[tuple[str, dict]]  # (record number, clinical fields) in file order


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


def import_file(store: Store, vault: Vault, path: Path, *, record_prefix: str, cohort: str | None = None
                ) -> ImportReport:
    """A FHIR Bundle (.json) or a twins' CSV (header with patient_id, time and cgm_mgdl) holds diabetes records;
    any other file is read as heart-disease records. `cohort` ("train" or "test") applies to diabetes records.

    All or nothing: a RecordFileError lists every problem and nothing is written."""
    path = Path(path)
    reader = reader_for(path)
    kind = KINDS[reader.kind]
    kind.check_cohort(path, cohort)
    records = reader.read(path, record_prefix)
    cohorts = kind.split([clinical for _, clinical in records], cohort)
    return write_records(store, vault, records, cohorts, kind=kind.name, source=path.name)


def _is_json(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def _diabetes(read) -> Callable[[Path, str], Records]:
    return lambda path, record_prefix: [(record.patient_id, record.to_clinical()) for record in read(path)]


register_kind(HEART_DISEASE)
register_kind(DIABETES)
register(Reader(DIABETES.name, "fhir", lambda path: _is_json(path) and twin_fhir.is_twin_bundle(path),
                _diabetes(twin_fhir.read_twin_bundle)))
register(Reader(DIABETES.name, "csv", lambda path: not _is_json(path) and twin_csv.is_twin_csv(path),
                _diabetes(twin_csv.read_twin_csv)))
register(Reader(HEART_DISEASE.name, "fhir", _is_json,
                lambda path, record_prefix: heart_fhir.read_bundle_file(path, record_prefix=record_prefix),
                fallback=True))
register(Reader(HEART_DISEASE.name, "csv", lambda path: True,
                lambda path, record_prefix: heart_csv.read_heart_disease_csv(path, record_prefix=record_prefix),
                fallback=True))
