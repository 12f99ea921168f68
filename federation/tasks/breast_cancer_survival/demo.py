"""Demo data: GBSG2 (German Breast Cancer Study Group 2; Schumacher et al., J Clin Oncol 1994; the 686 patients
with complete data, as Sauerbrei and Royston 1999 and the R package TH.data ship them), which lifelines ships
offline (`lifelines.datasets.load_gbsg2`). The study had no hospitals in its published data, so the split is a
rule: the patients in the data set's order, shuffled by numpy's default_rng(43), dealt round-robin to three
hospitals, "north", "centre" and "south" (229, 229 and 228 patients; record numbers GBSG-0001 ... by the row
in the data set). consent.csv: every patient consents but a tenth, drawn by default_rng(44).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from federation.tasks.breast_cancer_survival.readers import COLUMNS

HOSPITALS = ("north", "centre", "south")
SPLIT_SEED, CONSENT_SEED, DECLINE_FRACTION = 43, 44, 0.1


def hospital_rows() -> dict[str, list[dict]]:
    """Hospital -> its GBSG2 rows (the reader's columns), by the rule above."""
    from lifelines.datasets import load_gbsg2  # only to write demo data: the node reads the CSV files

    data = load_gbsg2()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(data))
    rows: dict[str, list[dict]] = {name: [] for name in HOSPITALS}
    for position, index in enumerate(order):
        row = data.iloc[int(index)]
        rows[HOSPITALS[position % len(HOSPITALS)]].append(
            {"record_number": f"GBSG-{int(index) + 1:04d}", **{c: row[c] for c in COLUMNS[1:]}})
    return rows


def write_demo_data(directory: Path) -> None:
    """<hospital>.csv for each hospital and consent.csv, in `directory`."""
    rng = np.random.default_rng(CONSENT_SEED)
    consent = []
    for name, rows in hospital_rows().items():
        with open(directory / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        consent += [(name, row["record_number"], "no" if rng.random() < DECLINE_FRACTION else "yes") for row in rows]
    with open(directory / "consent.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("hospital", "record_number", "consent"), *consent])
