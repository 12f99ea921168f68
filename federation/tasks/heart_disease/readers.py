"""How a node reads heart-disease records: the UCI layout as CSV (14 columns, or a header naming them) and FHIR R4
(node/records/heart_fhir.py, which needs the node's FHIR parser: named, not imported). A FHIR file no other
task's reader takes falls back to the heart-disease FHIR reader, which reports what it skipped; a CSV file is
this task's only if its header or its first row fits the UCI layout (the node offers CSV readers no FHIR file)."""

from __future__ import annotations

import csv
from pathlib import Path

from federation.tasks.data_path import RecordReader
from federation.tasks.heart_disease.task import UCI_COLUMNS

FHIR_CHECK = "node.records.fhir_input:sniff"


def is_uci_csv(path: Path) -> bool:
    """A header naming the UCI columns, or a first row of exactly 14 cells, the first a value (the UCI files have
    no header)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            first = next((row for row in csv.reader(handle) if any(cell.strip() for cell in row)), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if first is None:
        return False
    header = {cell.strip().lower() for cell in first}
    return set(UCI_COLUMNS) <= header or (len(first) == len(UCI_COLUMNS) and _is_value(first[0]))


def _is_value(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell.strip() in ("", "?", "NA")
    return True


READERS = (
    RecordReader("fhir", FHIR_CHECK, "node.records.builtin_readers:read_heart_fhir", fallback=True),
    RecordReader("csv", is_uci_csv, "node.records.builtin_readers:read_heart_csv"),
)
