"""The registry of record readers: each reads one format of one record kind; `import_file` picks the first
reader that accepts the file, lets the kind split the records into cohorts and hands them to the one writer.

The readers are the tasks' (federation/tasks/*/: a task's `readers`, registered here for every task in
federation.tasks.TASKS): adding a task adds its readers, with no change here. Readers that recognise their
files by content come first, fallbacks last (heart-disease FHIR takes any other FHIR file: `.json`, `.ndjson`
or text starting with `{`). A CSV reader is never offered a FHIR file. A file no reader takes is refused with
the kinds this node knows. A FHIR file is parsed once (node/records/fhir_input.py `load`): choosing the reader
and reading share the parsed document.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from federation.tasks import TASKS
from federation.tasks.data_path import resolve
from node.records import fhir_input
from node.records.base import ImportReport, RecordFileError, Records
from node.records.kinds import RecordKind
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


def register_task(task) -> None:
    """A task's record kind and readers (federation/tasks/data_path.py RecordReader)."""
    register_kind(RecordKind.of_task(task))
    for declared in task.readers:
        register(Reader(task.record_kind, declared.format, _accepts(declared), _reads(declared),
                        fallback=declared.fallback))


def _accepts(declared) -> Callable[[Path], bool]:
    def accepts(path: Path) -> bool:
        if declared.format == "csv" and fhir_input.sniff(path):
            return False
        return bool(resolve(declared.accepts)(path))

    return accepts


def _reads(declared) -> Callable[[Path, str], Records]:
    def read(path: Path, record_prefix: str) -> Records:
        rows = resolve(declared.read)(path, record_prefix)
        return rows if isinstance(rows, Records) else Records(rows, format=declared.format)

    return read


def reader_for(path: Path) -> Reader:
    path = Path(path)
    if not path.is_file():
        raise RecordFileError(f"{path}: no such file")
    found = next((reader for reader in READERS if reader.accepts(path)), None)
    if found is None:
        known = {}
        for reader in READERS:
            known.setdefault(reader.kind, []).append(reader.format)
        kinds = "; ".join(f"{kind} ({', '.join(sorted(formats))})" for kind, formats in known.items())
        raise RecordFileError(f"{path.name}: no reader of this node recognises the file; the record kinds it "
                              f"reads are: {kinds} (docs/tasks.md says what each expects)")
    return found


def import_file(store: Store, vault: Vault, path: Path, *, record_prefix: str, cohort: str | None = None,
                record_system: str | None = None) -> ImportReport:
    """Read a file with the reader of its kind and format (a twins' CSV, a heart-disease UCI CSV, FHIR, a task's
    own layout), split it into cohorts as its kind does (`cohort`, "train" or "test", where the kind takes one)
    and store it.

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


for _task in TASKS.values():
    register_task(_task)
