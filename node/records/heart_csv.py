"""Heart-disease records from CSV: the UCI Heart Disease layout (14 columns, no header) or a CSV with a header
naming those columns (and optionally `record_number`).

An import is all or nothing: a malformed line rejects the whole file with every bad line listed, and nothing
is written. Records missing a value are kept but marked incomplete; no task uses them. Cohorts: FLamby's split.
"""

from __future__ import annotations

from pathlib import Path

from federation.tasks.heart_disease import FIELD_RANGES, UCI_COLUMNS, HeartDiseaseTask
from node.records.base import ImportReport, RecordFileError, Records, problems_message
from node.records.csv_input import parse_number, read_rows
from node.records.writer import write_records
from node.store import Store
from node.vault import Vault

MISSING = {"", "?", "nan", "NaN", "NA"}


def _parse_value(text: str, column: str, line: int, problems: list[str]) -> float | None:
    value = parse_number(text, column=column, line=line, missing=MISSING, problems=problems)
    low, high = FIELD_RANGES[column]
    if value is not None and not low <= value <= high:
        problems.append(f"line {line}: {column} = {value:g} is outside [{low}, {high}]")
    return value


def read_heart_disease_csv(path: Path, *, record_prefix: str) -> Records:
    """Parse and validate a file; returns (record number, clinical fields) in file order, each value's line as its
    provenance."""
    rows = read_rows(path, empty="the file holds no records")
    header = [cell.strip().lower() for cell in rows[0][1]]
    if set(UCI_COLUMNS) <= set(header):
        columns, rows = header, rows[1:]
    else:
        columns = list(UCI_COLUMNS)
    problems: list[str] = []
    records = Records(format="csv")
    for line, row in rows:
        if len(row) != len(columns):
            problems.append(f"line {line}: {len(row)} columns, expected {len(columns)}")
            continue
        cells = dict(zip(columns, row))
        clinical = {column: _parse_value(cells[column], column, line, problems) for column in UCI_COLUMNS}
        number = cells.get("record_number", "").strip() or f"{record_prefix}-{line:05d}"
        records.append((number, clinical))
        records.provenance[number] = {column: {"line": line} for column in UCI_COLUMNS if clinical[column] is not None}
    if problems:
        raise RecordFileError(problems_message(path, problems))
    return records


def store_heart_disease(store: Store, vault: Vault, records: list[tuple[str, dict]], *, source: str) -> ImportReport:
    """Store checked records: pseudonyms, FLamby's split, known record numbers skipped."""
    task = HeartDiseaseTask()
    cohorts = task.split_cohorts([clinical for _, clinical in records])
    return write_records(store, vault, records, cohorts, kind=task.record_kind, source=source)


def import_heart_disease_csv(store: Store, vault: Vault, path: Path, *, record_prefix: str) -> ImportReport:
    """Import a hospital's file: each new patient gets a random pseudonym and a cohort (FLamby's split)."""
    path = Path(path)
    return store_heart_disease(store, vault, read_heart_disease_csv(path, record_prefix=record_prefix),
                               source=path.name)
