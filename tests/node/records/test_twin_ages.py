"""The twins' records carry the patient's age (issue 17: the glucose task reports its metrics per age group): an
optional `age_years` column in CSV, the Patient's birthDate in FHIR (age in whole years at the record's start).
The virtual patients' exports carry their published age; a bad age is named where it is and nothing is imported."""

from __future__ import annotations

import json

import pytest

from node.records import import_file
from node.records.twin_csv import TwinFileError, read_twin_csv
from node.records.twin_fhir import age_at, birth_date, read_twin_bundle
from node.twins.cohort import simulate_patients, split_days, write_records

HEADER = "patient_id,time,cgm_mgdl,age_years\n"


@pytest.fixture(scope="module")
def records():
    return simulate_patients(["child#002", "adolescent#001", "adult#003"], days=1, seed=3)


@pytest.mark.parametrize("format, reader", [("csv", read_twin_csv), ("fhir", read_twin_bundle)])
def test_the_virtual_patients_exports_carry_their_published_age(records, tmp_path, format, reader):
    assert [r.age_years for r in records] == [9.0, 18.0, 27.0]  # Quest.csv
    path = write_records(records, tmp_path / f"twins.{'json' if format == 'fhir' else 'csv'}", format=format)
    assert [r.age_years for r in reader(path)] == [9.0, 18.0, 27.0]
    assert split_days(records[0], first_day=0, days=1).age_years == 9.0
    assert records[0].to_clinical()["age_years"] == 9.0


def _csv(tmp_path, body: str, header: str = HEADER):
    path = tmp_path / "ages.csv"
    path.write_text(header + body)
    return path


def test_an_age_on_any_row_is_the_patients_and_no_age_is_none(tmp_path):
    found = read_twin_csv(_csv(tmp_path, "P1,2026-01-05T07:00:00Z,120,\nP1,2026-01-05T07:05:00Z,125,15\n"
                                         "P2,2026-01-05T07:00:00Z,130,\n"))
    assert [(r.patient_id, r.age_years) for r in found] == [("P1", 15.0), ("P2", None)]
    old = read_twin_csv(_csv(tmp_path, "P1,2026-01-05T07:00:00Z,120\n", header="patient_id,time,cgm_mgdl\n"))
    assert old[0].age_years is None and old[0].to_clinical()["age_years"] is None


@pytest.mark.parametrize("body, expected", [
    ("P1,2026-01-05T07:05:00Z,125,121\n", "line 3: age_years = 121 is outside [0, 120]"),
    ("P1,2026-01-05T07:05:00Z,125,-2\n", "line 3: age_years = -2 is outside [0, 120]"),
    ("P1,2026-01-05T07:05:00Z,125,teen\n", "line 3: age_years is 'teen', not a number"),
    ("P1,2026-01-05T07:05:00Z,125,16\n", "line 3: patient P1 has two different ages, 15 and 16 (also line 2)"),
])
def test_a_bad_age_in_csv_is_named_and_nothing_is_imported(node, tmp_path, body, expected):
    store, vault = node
    with pytest.raises(TwinFileError) as error:
        import_file(store, vault, _csv(tmp_path, "P1,2026-01-05T07:00:00Z,120,15\n" + body), record_prefix="X")
    assert expected in str(error.value) and "nothing imported" in str(error.value)
    assert store.patients() == []


def test_age_at_the_records_start_from_a_birth_date():
    from datetime import date

    start = date(2026, 1, 5)
    assert age_at("2013-01-05", start) == 13.0 and age_at("2013-01-06", start) == 12.0
    assert age_at("2013", start) == 13.0 and age_at("2013-02", start) == 12.0  # partial: from the first day
    assert age_at(birth_date(date(2028, 2, 29), age_years=9), date(2028, 2, 29)) == 9.0
    assert age_at(birth_date(start, age_years=18.0), start) == 18.0


def _bundle(records, tmp_path, birth: str | None):
    path = write_records(records[:1], tmp_path / "ages.json", format="fhir")
    bundle = json.loads(path.read_text())
    patient = bundle["entry"][0]["resource"]
    patient.pop("birthDate")
    if birth is not None:
        patient["birthDate"] = birth
    path.write_text(json.dumps(bundle))
    return path


def test_a_fhir_patient_without_a_birth_date_has_no_age(records, tmp_path):
    assert read_twin_bundle(_bundle(records, tmp_path, None))[0].age_years is None
    assert read_twin_bundle(_bundle(records, tmp_path, "2016-06"))[0].age_years == 9.0


@pytest.mark.parametrize("birth, expected", [
    ("2030-01-01", "entry 1 (Patient p1): birthDate 2030-01-01 is after the record's start (2026-01-05)"),
    ("1890-01-01", "entry 1 (Patient p1): birthDate 1890-01-01: age_years = 136 is outside [0, 120]"),
    ("2016-13-01", "birthDate"),
])
def test_a_bad_birth_date_is_named_and_nothing_is_imported(node, records, tmp_path, birth, expected):
    store, vault = node
    with pytest.raises(TwinFileError) as error:
        import_file(store, vault, _bundle(records, tmp_path, birth), record_prefix="X")
    assert expected in str(error.value) and "nothing imported" in str(error.value)
    assert store.patients() == []
