"""The record registry (node/records/registry.py): each file goes to the reader of its kind and format, a new kind
plugs in by registering a kind and a reader, and the one writer seals every record under its own pseudonym."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.ids import Pseudonym
from node.records import KINDS, READERS, Reader, RecordFileError, import_file, reader_for, register, register_kind
from node.records.heart_fhir_export import export_csv_as_bundle
from node.records.kinds import RecordKind

DATA = Path(__file__).resolve().parents[3] / "deploy" / "data" / "heart-disease"
TWIN_HEADER = "patient_id,time,cgm_mgdl\n"


@pytest.fixture
def scratch_kind():
    """Register a made-up kind and a reader for `.tsv` files; unregister them afterwards."""
    kind = register_kind(RecordKind("scratch", lambda path, cohort: None,
                                    lambda clinicals, cohort: [cohort or "train"] * len(clinicals)))

    def read(path: Path, record_prefix: str):
        rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
        return [(f"{record_prefix}-{number}", {"value": float(value)}) for number, value in rows]

    reader = register(Reader(kind.name, "tsv", lambda path: path.suffix == ".tsv", read))
    yield kind
    READERS.remove(reader)
    del KINDS[kind.name]


def test_each_file_goes_to_the_reader_of_its_kind_and_format(tmp_path):
    heart_csv = DATA / "processed.cleveland.data"
    heart_bundle = export_csv_as_bundle(heart_csv, tmp_path / "heart.json", record_prefix="CLE")
    twin_csv = tmp_path / "twins.csv"
    twin_csv.write_text(TWIN_HEADER + "P1,2026-01-05T07:00:00Z,120\n")
    chosen = [(r.kind, r.format) for r in map(reader_for, (heart_csv, heart_bundle, twin_csv))]
    assert chosen == [("heart-disease", "csv"), ("heart-disease", "fhir"), ("diabetes", "csv")]


def test_a_registered_kind_is_imported_sealed_under_fresh_pseudonyms(tmp_path, node, scratch_kind):
    store, vault = node
    path = tmp_path / "values.tsv"
    path.write_text("1\t4.5\n2\t5.5\n")
    report = import_file(store, vault, path, record_prefix="S", cohort="test")
    assert (report.source, report.imported, report.cohorts) == ("values.tsv", 2, {"test": 2})
    patients = store.patients()
    assert [(p.record_number, p.kind, p.cohort) for p in patients] == [("S-1", "scratch", "test"),
                                                                        ("S-2", "scratch", "test")]
    for patient, value in zip(patients, (4.5, 5.5)):
        Pseudonym.parse(patient.pseudonym)
        assert vault.open_record(patient.clinical, associated=patient.pseudonym) == {"value": value}
    assert import_file(store, vault, path, record_prefix="S").already_present == 2


def test_a_new_reader_comes_before_the_fallbacks(scratch_kind):
    # Only FHIR falls back to heart disease; a CSV is heart disease only in the UCI layout (issue 17).
    assert [(r.kind, r.format, r.fallback) for r in READERS][-2:] == [("scratch", "tsv", False),
                                                                      ("heart-disease", "fhir", True)]


def test_an_unknown_csv_is_refused_naming_the_known_kinds_not_read_as_heart_disease(tmp_path, node):
    store, vault = node
    path = tmp_path / "oncology.csv"
    path.write_text("pid,time,event,age\nP1,12.5,1,61\n")
    with pytest.raises(RecordFileError, match=r"no reader .* recognises.*heart-disease \(csv, fhir\).*diabetes"):
        import_file(store, vault, path, record_prefix="X")
    assert store.patients() == []


def test_every_registered_task_brings_its_kind_and_readers():
    from federation.tasks import TASKS

    for task in TASKS.values():
        assert task.record_kind in KINDS
        assert {r.format for r in READERS if r.kind == task.record_kind} == {r.format for r in task.readers}


def test_a_reader_needs_its_kind_registered_first():
    with pytest.raises(ValueError, match="register the record kind"):
        register(Reader("unknown-kind", "csv", lambda path: False, lambda path, prefix: []))


def test_heart_disease_files_refuse_a_cohort_before_reading(tmp_path, node):
    store, vault = node
    with pytest.raises(RecordFileError, match="split as FLamby does"):
        import_file(store, vault, DATA / "processed.cleveland.data", record_prefix="X", cohort="test")
    assert store.patients() == []


def test_a_missing_file_is_refused_by_name(tmp_path, node):
    store, vault = node
    with pytest.raises(RecordFileError, match="absent.csv: no such file"):
        import_file(store, vault, tmp_path / "absent.csv", record_prefix="X", cohort="test")
