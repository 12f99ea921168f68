"""The figures issue 18's closing note gives, measured on the real public FHIR in tests/data/fhir/: files tried,
imported or refused (with the reason), patients imported, updated, unchanged and rejected (with reasons),
resources skipped by type, and patients per second on the largest bundle. Prints one JSON line:

    PYTHONPATH=$PWD python -m pytest tests/node/records/test_import_figures.py -m slow -s -q
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from node.records import RecordFileError, import_file
from node.store import Store
from node.vault import Vault, create_key_file

DATA = Path(__file__).resolve().parents[2] / "data" / "fhir"
ORDER = ["synthea", "bulk", "hl7", "cgm"]  # the bulk export re-sends three Synthea patients: updates


def _files() -> list[Path]:
    return [path for folder in ORDER for path in sorted((DATA / folder).iterdir()) if path.suffix in (".json", ".ndjson")]


def _node(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    create_key_file(folder / "data.key")
    return Store(f"sqlite:///{folder / 'node.db'}"), Vault.open(folder / "data.key")


def _patients_per_second(path: Path, tmp_path: Path, *, repeats: int = 3) -> dict:
    best, report = float("inf"), None
    for attempt in range(repeats):
        store, vault = _node(tmp_path / f"{path.stem}-{attempt}")
        started = time.perf_counter()
        report = import_file(store, vault, path, record_prefix="SYN")
        best = min(best, time.perf_counter() - started)
    resources = len(json.loads(path.read_text()).get("entry", [])) if path.suffix == ".json" else None
    return {"file": path.name, "bytes": path.stat().st_size, "resources": resources, "patients": report.imported,
            "seconds": round(best, 3), "patients_per_s": round(report.imported / best, 2)}


@pytest.mark.slow
def test_print_the_closing_figures(tmp_path):
    store, vault = _node(tmp_path / "all")
    outcomes, skipped, refused, reasons = Counter(), Counter(), {}, []
    files = _files()
    for path in files:
        try:
            report = import_file(store, vault, path, record_prefix="SYN")
        except RecordFileError as exc:
            refused[path.name] = " ".join(line.strip() for line in str(exc).splitlines()[:2])[:300]
            continue
        outcomes.update(imported=report.imported, updated=report.updated, unchanged=report.already_present,
                        rejected=report.rejected, incomplete=report.incomplete)
        skipped.update(report.skipped)
        reasons += [f"{path.name}: {p.record_number}: {'; '.join(p.reasons)}" for p in report.patients
                    if p.outcome in ("rejected", "updated")]
    by_type = Counter()
    for kind, count in skipped.items():
        by_type[kind.split(" ")[0] if not kind.startswith(("component", "DELETE", "GET")) else kind.split(":")[0]] += count
    largest = max((DATA / "synthea").glob("*.json"), key=lambda p: p.stat().st_size)
    merged = tmp_path / "synthea-5-patients.json"
    entries = [e for path in sorted((DATA / "synthea").glob("*.json")) for e in json.loads(path.read_text())["entry"]]
    merged.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    figures = {"files_tried": len(files), "files_imported": len(files) - len(refused), "files_refused": refused,
               "patients": dict(outcomes), "patient_outcomes_with_reasons": reasons,
               "skipped_by_type": dict(by_type.most_common()), "skipped_detail": dict(skipped.most_common()),
               "largest_bundle": _patients_per_second(largest, tmp_path),
               "five_synthea_bundles_in_one": _patients_per_second(merged, tmp_path),
               "bulk_ndjson": _patients_per_second(DATA / "bulk" / "synthea-export.ndjson", tmp_path)}
    print(json.dumps(figures))
    assert figures["patients"]["imported"] >= 5 and figures["largest_bundle"]["patients"] == 1
