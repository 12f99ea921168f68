"""What a task declares about its data, beside its model: how its records are read and split, what a patient is
told before consenting, its on-chain data categories, its demo data, how FedAvg weighs the hospitals and the
subgroups its metrics are reported for. docs/tasks.md ("Adding a condition") walks through it.

Nothing here imports the node: a task's readers return plain rows, `(record number, clinical fields)`, and the
node's importer (node/records/registry.py) seals and stores them. A reader that needs the node's own parsers
(the FHIR reader of node/records/fhir_input.py, the twins' record builder) is named as "module:function", and
the node resolves it; it then returns the node's `Records`.
"""

from __future__ import annotations

import csv
import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Rows = list[tuple[str, dict]]  # (record number, clinical fields) in file order


class RecordFileError(ValueError):
    """The file cannot be imported; the message lists every problem with where it is (the node's importer
    reports it as it is: node/records/base.py uses this class)."""


@dataclass(frozen=True)
class RecordReader:
    """One format of a task's records. `accepts` must be cheap (suffix, header); `read` validates everything and
    raises RecordFileError listing every problem (an import is all or nothing)."""

    format: str  # "csv" or "fhir"
    accepts: Callable[[Path], bool] | str  # or "module:function" (a node-side check)
    read: Callable[[Path, str], Rows] | str  # (path, record prefix) -> rows; or "module:function" on the node
    fallback: bool = False  # takes what no other reader takes: tried after every other reader


@dataclass(frozen=True)
class DemoData:
    """Files a study of the task can run on without real patients: one file per hospital. Either shipped as
    package data (`package` and `directory`, e.g. deploy's data/heart-disease), or written by `write(directory)`
    (a data set another package ships offline, split by a documented rule)."""

    hospitals: dict[str, str]  # hospital name -> file name
    package: str = ""
    directory: str = ""
    write: Callable[[Path], None] | None = None

    def root(self) -> Path:
        """Where shipped files are (package data)."""
        return Path(str(importlib.resources.files(self.package).joinpath(self.directory)))

    def files(self, scratch: Path) -> dict[str, Path]:
        """Hospital name -> file; written under `scratch` first if the data are generated."""
        if self.write is not None:
            scratch.mkdir(parents=True, exist_ok=True)
            self.write(scratch)
        root = scratch if self.write is not None else self.root()
        return {name: root / filename for name, filename in self.hospitals.items()}


CONSENT_FILE = "consent.csv"  # in a study's data directory: hospital,record_number,consent (yes or no)


def hospital_files(directory: Path) -> dict[str, Path]:
    """A study's data directory: one file per hospital, named by the file's stem (consent.csv, README and
    hidden files are not hospitals)."""
    files = {p.stem: p for p in sorted(Path(directory).iterdir())
             if p.is_file() and p.name != CONSENT_FILE and not p.name.startswith((".", "README"))}
    if not files:
        raise ValueError(f"{directory}: no data files (one file per hospital)")
    return files


def study_consent(files: dict[str, Path], *, consent_file: Path | None = None,
                  demo: bool = False) -> dict[tuple[str, str], bool] | None:
    """(hospital, record number) -> whether the patient consents, from `consent_file` or the data's consent.csv.
    Consent fails closed: a patient the file does not list does not consent, and data other than a task's demo
    data without a consent file is refused. None: demo data without a file (the demo's seeded declines)."""
    found = consent_file or next((d / CONSENT_FILE for d in sorted({p.parent for p in files.values()})
                                  if (d / CONSENT_FILE).is_file()), None)
    if found is None:
        if demo:
            return None
        raise ValueError(f"no consent given: put {CONSENT_FILE} (hospital,record_number,consent) beside the data "
                         "or give --consent FILE")
    with open(found, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"hospital", "record_number", "consent"} <= set(rows[0]):
        raise ValueError(f"{found}: the header must name hospital, record_number and consent")
    return {(row["hospital"].strip(), row["record_number"].strip()): row["consent"].strip().lower() in YES
            for row in rows}


YES = ("yes", "y", "1", "true")


@dataclass(frozen=True)
class Subgroup:
    """A group of patients the headline metric is also reported for (fairness). `of(record)` names the group a
    patient's record falls in, or None; every patient falls in at most one group of an axis, so the groups'
    evaluation sums partition the patients (docs/privacy.md)."""

    axis: str  # e.g. "sex"
    groups: tuple[str, ...]  # every group of the axis (the release declares a bound for each group's sums)
    of: Callable[[dict], str | None]  # the group of a record (one of `groups`), or None: in none of them


def demo_records(task, scratch: Path) -> dict[str, list[dict]]:
    """Hospital -> the clinical fields of its demo records, read by the task's own readers (not the node's):
    for checks that need a task's real data without a node (the sensitivity check). Empty when the task ships
    no demo data or reads it only through the node."""
    if task.demo_data is None:
        return {}
    readers = [r for r in task.readers if callable(r.read) and callable(r.accepts)]
    found = {}
    for hospital, path in task.demo_data.files(scratch).items():
        reader = next((r for r in readers if r.accepts(path)), None)
        if reader is None:
            return {}
        found[hospital] = [fields for _, fields in reader.read(path, hospital)]
    return found


def resolve(reference):
    """A callable, or "module:function" imported now (the node resolves its own readers this way)."""
    if callable(reference):
        return reference
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


# Categories every task may name; a task adds its own with bits not used here or by another task.
SHARED_DATA_CATEGORIES = {
    "demographics": 0, "vital-signs": 1, "laboratory": 2, "diagnoses": 3, "ecg": 4, "exercise-test": 5,
    "medications": 6, "glucose": 7,
}


def data_categories(tasks) -> dict[str, int]:
    """The shared categories and every task's own, by bit; a name or bit used twice for different things is
    refused (the chain keeps only the bits: one bit must mean one thing)."""
    merged = dict(SHARED_DATA_CATEGORIES)
    for task in tasks:
        for name, bit in task.data_categories.items():
            if not 0 <= bit < 256:
                raise ValueError(f"task {task.task_id}: data category {name!r} has bit {bit}, not 0-255")
            if merged.get(name, bit) != bit or (bit in merged.values() and merged.get(name) != bit):
                raise ValueError(f"task {task.task_id}: data category {name!r} (bit {bit}) clashes with "
                                 f"{[n for n, b in merged.items() if b == bit or n == name]}")
            merged[name] = bit
    return dict(sorted(merged.items(), key=lambda item: item[1]))
