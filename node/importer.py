"""Import patient records from CSV: the UCI Heart Disease layout (14 columns, no header) or a CSV with a
header naming those columns (and optionally `record_number`); and type 1 diabetes records for the twins
(node/twins/csv_import.py, node/twins/fhir_import.py): `import_file` picks the importer by the file.

An import is all or nothing: a malformed line rejects the whole file with every bad line listed, and
nothing is written. Records missing a value are kept but marked incomplete; no task uses them.
"""

from __future__ import annotations

import csv
import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import select

from federation.tasks.heart_disease import FIELD_RANGES, SPLIT_SEED, UCI_COLUMNS, HeartDiseaseTask, flamby_split
from node.store import Patient, Store
from node.vault import Vault

MISSING = {"", "?", "nan", "NaN", "NA"}


class RecordFileError(ValueError):
    """The file cannot be imported; the message lists every problem with its line number."""


TWIN_TEST_FRACTION = 1 / 3


@dataclass
class ImportReport:
    source: str
    imported: int = 0
    incomplete: int = 0
    already_present: int = 0
    cohorts: dict[str, int] = field(default_factory=dict)


def _parse_value(text: str, column: str, line: int, problems: list[str]) -> float | None:
    text = text.strip()
    if text in MISSING:
        return None
    try:
        value = float(text)
    except ValueError:
        problems.append(f"line {line}: {column} is {text!r}, not a number")
        return None
    low, high = FIELD_RANGES[column]
    if math.isnan(value):
        return None
    if not low <= value <= high:
        problems.append(f"line {line}: {column} = {value:g} is outside [{low}, {high}]")
    return value


def read_heart_disease_csv(path: Path, *, record_prefix: str) -> list[tuple[str, dict]]:
    """Parse and validate a file; returns (record number, clinical fields) in file order."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise RecordFileError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RecordFileError(f"{path}: not a readable CSV file ({exc})") from None
    rows = [(number, row) for number, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not rows:
        raise RecordFileError(f"{path}: the file holds no records")
    header = [cell.strip().lower() for cell in rows[0][1]]
    if set(UCI_COLUMNS) <= set(header):
        columns, rows = header, rows[1:]
    else:
        columns = list(UCI_COLUMNS)
    problems: list[str] = []
    records = []
    for line, row in rows:
        if len(row) != len(columns):
            problems.append(f"line {line}: {len(row)} columns, expected {len(columns)}")
            continue
        cells = dict(zip(columns, row))
        clinical = {column: _parse_value(cells[column], column, line, problems) for column in UCI_COLUMNS}
        number = cells.get("record_number", "").strip() or f"{record_prefix}-{line:05d}"
        records.append((number, clinical))
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise RecordFileError(f"{path}: {len(problems)} problem(s), nothing imported:\n  {shown}")
    return records


def import_heart_disease_csv(store: Store, vault: Vault, path: Path, *, record_prefix: str) -> ImportReport:
    """Import a hospital's file: each new patient gets a random pseudonym and a cohort (FLamby's split)."""
    path = Path(path)
    records = read_heart_disease_csv(path, record_prefix=record_prefix)
    task = HeartDiseaseTask()
    complete = [i for i, (_, clinical) in enumerate(records) if task.is_complete(clinical)]
    cohorts = ["incomplete"] * len(records)
    if complete:
        _, labels = task.examples([records[i][1] for i in complete])
        for i, is_test in zip(complete, flamby_split(labels)):
            cohorts[i] = "test" if is_test else "train"
    report = ImportReport(source=path.name)
    with store.session() as session:
        existing = set(session.exec(select(Patient.record_number)))
        for (number, clinical), cohort in zip(records, cohorts):
            if number in existing:
                report.already_present += 1
                continue
            pseudonym = "0x" + secrets.token_hex(32)
            session.add(
                Patient(
                    record_number=number,
                    pseudonym=pseudonym,
                    cohort=cohort,
                    source=path.name,
                    clinical=vault.seal(clinical, associated=pseudonym),
                )
            )
            report.imported += 1
            report.incomplete += cohort == "incomplete"
            report.cohorts[cohort] = report.cohorts.get(cohort, 0) + 1
        session.commit()
    return report


def import_file(store: Store, vault: Vault, path: Path, *, record_prefix: str, cohort: str | None = None) -> ImportReport:
    """A FHIR Bundle (.json) or a twins' CSV (header with patient_id, time, cgm_mgdl) holds diabetes records;
    any other file is read as heart-disease records. `cohort` ("train" or "test") applies to diabetes records."""
    from node.twins.csv_import import is_twin_csv, read_twin_csv
    from node.twins.fhir_import import is_twin_bundle, read_twin_bundle

    path = Path(path)
    if path.suffix.lower() == ".json" and is_twin_bundle(path):
        return import_twin_records(store, vault, read_twin_bundle(path), source=path.name, cohort=cohort)
    if path.suffix.lower() != ".json" and is_twin_csv(path):
        return import_twin_records(store, vault, read_twin_csv(path), source=path.name, cohort=cohort)
    if cohort is not None:
        raise RecordFileError(f"{path}: heart-disease records are split as FLamby does; a cohort cannot be given")
    if path.suffix.lower() == ".json":
        from node.fhir_records import import_bundle_file  # heart-disease Observations

        return import_bundle_file(store, vault, path, record_prefix=record_prefix)
    return import_heart_disease_csv(store, vault, path, record_prefix=record_prefix)


def import_twin_records(store: Store, vault: Vault, records, *, source: str, cohort: str | None = None) -> ImportReport:
    """Store type 1 diabetes records (node/twins/records.py), sealed, one pseudonym per patient.

    Cohorts: `cohort` for all of them if given; otherwise a third of the file's usable patients (at least one
    when there are two or more) are `test`, chosen by a random permutation seeded as FLamby's split (43) in
    file order. A record with no complete forecasting window is `incomplete`."""
    from federation.tasks.glucose_forecast import GlucoseForecastTask
    from node.twins.records import KIND

    if cohort not in (None, "train", "test"):
        raise RecordFileError(f"{source}: cohort must be train or test, not {cohort!r}")
    task = GlucoseForecastTask()
    clinical = [r.to_clinical() for r in records]
    usable = [i for i, c in enumerate(clinical) if task.is_complete(c)]
    cohorts = ["incomplete"] * len(records)
    for i in usable:
        cohorts[i] = cohort or "train"
    if cohort is None and len(usable) >= 2:
        import numpy as np

        n_test = max(1, round(len(usable) * TWIN_TEST_FRACTION))
        for i in np.random.default_rng(SPLIT_SEED).permutation(usable)[:n_test]:
            cohorts[int(i)] = "test"
    report = ImportReport(source=source)
    with store.session() as session:
        existing = set(session.exec(select(Patient.record_number)))
        for record, sealed_fields, patient_cohort in zip(records, clinical, cohorts):
            if record.patient_id in existing:
                report.already_present += 1
                continue
            pseudonym = "0x" + secrets.token_hex(32)
            session.add(
                Patient(
                    record_number=record.patient_id, pseudonym=pseudonym, cohort=patient_cohort, kind=KIND,
                    source=source, clinical=vault.seal(sealed_fields, associated=pseudonym),
                )
            )
            report.imported += 1
            report.incomplete += patient_cohort == "incomplete"
            report.cohorts[patient_cohort] = report.cohorts.get(patient_cohort, 0) + 1
        session.commit()
    return report
