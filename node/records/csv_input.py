"""What the CSV readers (heart_csv.py, twin_csv.py) share: the file's non-blank rows with their line numbers, and
one cell read as a number, every problem collected with its line (an import is all or nothing)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from node.records.base import RecordFileError


def read_rows(path: Path, *, error: type[RecordFileError] = RecordFileError, empty: str
              ) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every row with any text (UTF-8, a byte-order mark dropped); `error` if the file
    is missing, unreadable or holds no such row (`empty` says what it lacks)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise error(f"{path}: not a readable CSV file ({exc})") from None
    numbered = [(line, row) for line, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not numbered:
        raise error(f"{path}: {empty}")
    return numbered


def parse_number(text: str, *, column: str, line: int, missing: set[str], problems: list[str]) -> float | None:
    """The cell as a float; None when it is one of `missing` or NaN (a missing value) or not a number (then the
    problem is added to `problems`). Ranges are the caller's to check."""
    text = text.strip()
    if text in missing:
        return None
    try:
        value = float(text)
    except ValueError:
        problems.append(f"line {line}: {column} is {text!r}, not a number")
        return None
    return None if math.isnan(value) else value
