"""The task's records as CSV, in the layout and coding of the GBSG2 data set (lifelines' `load_gbsg2`, the
TH.data package's GBSG2): a header naming `record_number` and the columns below, one patient a row.

| column | values | stored as |
|---|---|---|
| `horTh` | yes, no (hormonal therapy) | 1, 0 |
| `age` | years, 18-100 | as is |
| `menostat` | Pre, Post (menopausal status) | 0, 1 |
| `tsize` | tumour size, mm, 1-250 | as is |
| `tgrade` | I, II, III (tumour grade) | 1, 2, 3 |
| `pnodes` | positive lymph nodes, 0-100 | as is |
| `progrec`, `estrec` | progesterone, oestrogen receptor, fmol/l, 0-5000 | as is |
| `time` | days from surgery to recurrence or death (event) or to the last follow-up (censored), 1-10000 | `time_days` |
| `cens` | 1: the event was observed; 0: censored (the two-column label is `time_days`, `event`) | `event` |

All or nothing: every bad cell is listed with its line and nothing is imported.
"""

from __future__ import annotations

import csv
from pathlib import Path

from federation.tasks.data_path import RecordFileError

CODES = {"horTh": {"no": 0, "yes": 1}, "menostat": {"pre": 0, "post": 1}, "tgrade": {"i": 1, "ii": 2, "iii": 3},
         "cens": {"0": 0, "1": 1}}
RANGES = {"age": (18, 100), "tsize": (1, 250), "pnodes": (0, 100), "progrec": (0, 5000), "estrec": (0, 5000),
          "time": (1, 10000)}
COLUMNS = ("record_number", "horTh", "age", "menostat", "tsize", "tgrade", "pnodes", "progrec", "estrec", "time", "cens")
STORED = {"time": "time_days", "cens": "event"}


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return [cell.strip() for cell in next(csv.reader(handle), [])]


def is_gbsg2_csv(path: Path) -> bool:
    try:
        return set(COLUMNS) <= set(_header(path))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def _cell(column: str, text: str, line: int, problems: list[str]):
    text = text.strip()
    if column in CODES:
        value = CODES[column].get(text.lower())
        if value is None:
            problems.append(f"line {line}: {column} is {text!r}, not one of {', '.join(CODES[column])}")
        return value
    try:
        value = float(text)
    except ValueError:
        problems.append(f"line {line}: {column} is {text!r}, not a number")
        return None
    low, high = RANGES[column]
    if not low <= value <= high:
        problems.append(f"line {line}: {column} = {value:g} is outside [{low}, {high}]")
    return value


def read_gbsg2_csv(path: Path, record_prefix: str) -> list[tuple[str, dict]]:
    """(record number, fields) of every row, in file order; RecordFileError listing every problem."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RecordFileError(f"{path.name}: not a readable CSV file ({exc})") from None
    problems: list[str] = []
    records, seen = [], set()
    for line, row in enumerate(rows, start=2):
        if None in row or any(row.get(c) is None for c in COLUMNS):
            problems.append(f"line {line}: {len(row)} columns, expected at least {len(COLUMNS)}")
            continue
        number = row["record_number"].strip() or f"{record_prefix}-{line:05d}"
        if number in seen:
            problems.append(f"line {line}: record number {number!r} appears twice")
        seen.add(number)
        fields = {STORED.get(c, c): _cell(c, row[c], line, problems) for c in COLUMNS[1:]}
        records.append((number, fields))
    if not rows:
        problems.append("the file holds no records")
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise RecordFileError(f"{path.name}: {len(problems)} problem(s), nothing imported:\n  {shown}")
    return records
