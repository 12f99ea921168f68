"""Type 1 diabetes records (the twins' data) from CSV: one row per value (or several values at one time),
patients one after another.

Layout (a header row is required; column names in any order and case, other columns ignored):

    patient_id,time,cgm_mgdl,carbs_g,bolus_u,basal_u_per_h,body_weight_kg,age_years
    P-001,2026-01-05T07:00:00Z,132,,,0.8,72,34
    P-001,2026-01-05T07:05:00Z,135,45,4.5,,,

- `patient_id` (required): the hospital's record number for the patient; never leaves the node.
- `time` (required): ISO 8601 with a time zone (`Z` or an offset such as `+01:00`), to the minute.
- `cgm_mgdl` a sensor glucose reading (mg/dL), `carbs_g` carbohydrate eaten (g), `bolus_u` an insulin
  bolus (U), `basal_u_per_h` the basal rate from that time on (U/h), `body_weight_kg`, `age_years` the
  patient's age in years at the record's start (on any of the patient's rows; every value given must be the
  same; the glucose task reports its metrics per age group from it, a patient without it is in no group).
  Any may be empty; at least `cgm_mgdl` must be a column. Ranges: node/twins/records.py RANGES.

All or nothing: any bad row rejects the file, and the error lists every problem (file, line, column, why).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from node.records import provenance
from node.records.base import RecordFileError, problems_message
from node.records.csv_input import parse_number, read_rows
from node.twins.records import DiabetesRecord, Event, build_record, check_range, parse_time

REQUIRED = ("patient_id", "time", "cgm_mgdl")
VALUE_COLUMNS = ("cgm_mgdl", "carbs_g", "bolus_u", "basal_u_per_h", "body_weight_kg", "age_years")
MISSING = {"", "NA", "na", "nan", "NaN"}


class TwinFileError(RecordFileError):
    """The file cannot be imported; the message lists every problem with where it is."""


def report_problems(path: Path, problems: list[str]) -> TwinFileError:
    return TwinFileError(problems_message(path, problems))


class DiabetesRecords(list):
    """DiabetesRecord in file order, with each one's provenance (record number -> series -> node/records/
    provenance.py `series`) and the identifier system each record number was read under (FHIR only)."""

    def __init__(self, records=()):
        super().__init__(records)
        self.provenance: dict[str, dict[str, dict]] = {}
        self.systems: dict[str, str] = {}


def records_from_events(path: Path, events: dict[str, list[Event]], problems: list[str], *, empty: str
                        ) -> DiabetesRecords:
    """Every patient's record from their events, all or nothing: any problem, or no value at all, refuses the file."""
    records = DiabetesRecords()
    for patient, patient_events in events.items():
        record = build_record(patient, patient_events, problems)
        if record is not None:
            records.append(record)
            records.provenance[patient] = provenance.series(patient_events, source=Path(path).name)
    if problems:
        raise report_problems(path, problems)
    if not records:
        raise TwinFileError(f"{path}: {empty}")
    return records


def is_twin_csv(path: Path) -> bool:
    """Whether a CSV file's header is this layout's (rather than the heart-disease one)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return {"patient_id", "time", "cgm_mgdl"} <= {cell.strip().lower() for cell in header}


def read_twin_csv(path: Path) -> DiabetesRecords:
    path = Path(path)
    numbered = read_rows(path, error=TwinFileError, empty="the file holds no rows")
    header = [cell.strip().lower() for cell in numbered[0][1]]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise TwinFileError(f"{path}: line {numbered[0][0]}: the header lacks column(s) {', '.join(missing)} "
                            f"(expected {', '.join(REQUIRED)} and optionally {', '.join(VALUE_COLUMNS[1:])})")
    if len(set(header)) != len(header):
        raise TwinFileError(f"{path}: line {numbered[0][0]}: a column is named twice")
    problems: list[str] = []
    events: dict[str, list[Event]] = {}
    for line, row in numbered[1:]:
        if len(row) != len(header):
            problems.append(f"line {line}: {len(row)} columns, the header has {len(header)}")
            continue
        cells = dict(zip(header, (cell.strip() for cell in row)))
        patient = cells["patient_id"]
        if not patient:
            problems.append(f"line {line}: patient_id is empty")
            continue
        try:
            moment = parse_time(cells["time"])
        except ValueError as exc:
            problems.append(f"line {line}: time {exc}")
            continue
        for column in VALUE_COLUMNS:
            value = parse_number(cells.get(column, ""), column=column, line=line, missing=MISSING, problems=problems)
            if value is None:
                continue
            why = check_range(column, value)
            if why:
                problems.append(f"line {line}: {why}")
                continue
            events.setdefault(patient, []).append(Event(moment, column, value, f"line {line}"))
    return records_from_events(path, events, problems, empty="the file holds no values")


def write_twin_csv(records: list[DiabetesRecord], path: Path) -> Path:
    """Write records in this layout (one row per minute that has any value): what `read_twin_csv` reads."""
    from datetime import timedelta

    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "time", *VALUE_COLUMNS])
        for r in records:
            basal_change = np.ones(r.minutes, dtype=bool)
            basal_change[1:] = r.basal_u_per_h[1:] != r.basal_u_per_h[:-1]
            rows = np.flatnonzero(np.isfinite(r.cgm_mgdl) | (r.carbs_g > 0) | (r.bolus_u > 0) | basal_change)
            for i, m in enumerate(rows):
                moment = (r.start + timedelta(minutes=int(m))).strftime("%Y-%m-%dT%H:%M:%SZ")
                writer.writerow([
                    r.patient_id, moment,
                    _cell(r.cgm_mgdl[m]), _cell(r.carbs_g[m]) if r.carbs_g[m] > 0 else "",
                    _cell(r.bolus_u[m]) if r.bolus_u[m] > 0 else "",
                    _cell(r.basal_u_per_h[m]) if basal_change[m] else "",
                    _cell(r.body_weight_kg) if i == 0 and r.body_weight_kg is not None else "",
                    _cell(r.age_years) if i == 0 and r.age_years is not None else "",
                ])
    return path


def _cell(value) -> str:
    return "" if value is None or not math.isfinite(value) else f"{float(value):.6g}"
