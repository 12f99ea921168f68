"""Twins' data import: FHIR R4 Bundles and CSV into DiabetesRecords, sealed in the node's store; every kind
of bad input is a clear error (file, line or entry, field, why) and nothing is written."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from federation.tasks.glucose_forecast import GlucoseForecastTask
from node.records import RecordFileError, import_file
from node.records.twin_csv import TwinFileError, read_twin_csv
from node.records.twin_fhir import read_twin_bundle
from node.twins.cohort import hospital_cohorts, hospital_parameter_sets, simulate_patients, write_records
from node.twins.records import DiabetesRecord

HEADER = "patient_id,time,cgm_mgdl,carbs_g,bolus_u,basal_u_per_h,body_weight_kg\n"


@pytest.fixture(scope="module")
def records():
    return simulate_patients(["adult#001", "child#002"], days=1, seed=3)


def _same(a: DiabetesRecord, b: DiabetesRecord):
    n = min(a.minutes, b.minutes)
    assert a.start == b.start and abs(a.minutes - b.minutes) <= 3  # the file ends at its last value
    np.testing.assert_allclose(a.cgm_mgdl[:n], b.cgm_mgdl[:n], equal_nan=True)
    for field in ("carbs_g", "bolus_u", "basal_u_per_h"):
        np.testing.assert_allclose(getattr(a, field)[:n], getattr(b, field)[:n], atol=1e-4)
    assert a.body_weight_kg == pytest.approx(b.body_weight_kg)


@pytest.mark.parametrize("format, reader", [("csv", read_twin_csv), ("fhir", read_twin_bundle)])
def test_written_records_read_back_the_same(records, tmp_path, format, reader):
    path = write_records(records, tmp_path / f"twins.{'json' if format == 'fhir' else 'csv'}", format=format)
    back = reader(path)
    assert [r.patient_id for r in back] == [r.patient_id for r in records]
    for a, b in zip(records, back):
        _same(a, b)


def test_cohort_is_deterministic_disjoint_and_plausible():
    subsets = hospital_parameter_sets(3)
    assert sum(len(s) for s in subsets) == 30 and len(set().union(*map(set, subsets))) == 30
    first = hospital_cohorts(["a", "b"], days=1, seed=7)
    again = hospital_cohorts(["a", "b"], days=1, seed=7)
    for name in first:
        for r, s in zip(first[name], again[name]):
            np.testing.assert_array_equal(r.cgm_mgdl, s.cgm_mgdl)
            np.testing.assert_array_equal(r.bolus_u, s.bolus_u)
    ids = [r.patient_id for v in first.values() for r in v]
    assert len(ids) == len(set(ids)) == 30
    r = first["a"][0]
    readings = r.cgm_mgdl[np.isfinite(r.cgm_mgdl)]
    assert len(readings) == 480  # Dexcom: every 3 minutes
    assert 39 <= readings.min() and readings.max() <= 600 and 80 < readings.mean() < 250
    assert 100 <= r.carbs_g.sum() <= 400 and r.bolus_u.sum() > 0 and (r.basal_u_per_h > 0).all()


def test_import_seals_records_one_pseudonym_each_and_splits_cohorts(records, node, tmp_path):
    store, vault = node
    more = simulate_patients(["adult#001", "adult#002", "child#003", "adolescent#004", "adult#005", "child#006"],
                             days=1, seed=4, patient_prefix="X")
    report = import_file(store, vault, write_records(more, tmp_path / "x.csv"), record_prefix="X")
    assert report.imported == 6 and report.cohorts == {"train": 4, "test": 2}
    patients = store.patients()
    assert {p.kind for p in patients} == {"diabetes"} and len({p.pseudonym for p in patients}) == 6
    assert b"cgm_mgdl" not in patients[0].clinical  # sealed
    opened = vault.open_record(patients[0].clinical, associated=patients[0].pseudonym)
    assert GlucoseForecastTask().is_complete(opened)
    assert DiabetesRecord.from_clinical("X", opened).minutes == more[0].minutes - 2  # last reading at 1437
    again = import_file(store, vault, write_records(more, tmp_path / "x.json", format="fhir"), record_prefix="X")
    assert again.imported == 0 and again.already_present == 6
    assert store.for_kind("heart-disease").candidates("train") == []
    test = import_file(store, vault, write_records(records, tmp_path / "t.csv"), record_prefix="X", cohort="test")
    assert test.cohorts == {"test": 2}


def _csv(tmp_path, body: str, header: str = HEADER):
    path = tmp_path / "bad.csv"
    path.write_text(header + body)
    return path


@pytest.mark.parametrize(
    "body, expected",
    [
        ("P1,2026-01-05T07:00:00Z,700,,,,\n", "line 3: cgm_mgdl = 700 is outside [20, 600]"),
        ("P1,2026-01-05T07:00:00Z,120,-5,,,\n", "line 3: carbs_g = -5 is outside [0, 500]"),
        ("P1,2026-01-05T07:00:00Z,120,,80,,\n", "line 3: bolus_u = 80 is outside [0, 50]"),
        ("P1,2026-01-05T07:00:00Z,120,,,40,\n", "line 3: basal_u_per_h = 40 is outside [0, 15]"),
        ("P1,2026-01-05T07:00:00Z,120,,,,0\n", "line 3: body_weight_kg = 0 is outside [1, 400]"),
        ("P1,2026-01-05T07:00:00Z,high,,,,\n", "line 3: cgm_mgdl is 'high', not a number"),
        ("P1,2026-01-05T07:00:00Z,inf,,,,\n", "line 3: cgm_mgdl is not a finite number"),
        ("P1,2026-01-05 07:00,120,,,,\n", "line 3: time '2026-01-05 07:00' has no time zone"),
        ("P1,yesterday,120,,,,\n", "line 3: time 'yesterday' is not an ISO 8601 date-time"),
        ("P1,2026-01-05T07:00:00Z,120\n", "line 3: 3 columns, the header has 7"),
        (",2026-01-05T07:00:00Z,120,,,,\n", "line 3: patient_id is empty"),
        ("P1,2026-01-05T07:00:00Z,120,,,,\nP1,2026-01-05T07:00:30Z,130,,,,\n", "two different CGM readings"),
        ("P1,2026-01-05T07:00:00Z,120,,,,\nP1,2027-06-05T07:00:00Z,130,,,,\n", "at most 366 per import"),
    ],
)
def test_bad_csv_rows_are_named_and_nothing_is_imported(node, tmp_path, body, expected):
    store, vault = node
    with pytest.raises(TwinFileError) as error:
        import_file(store, vault, _csv(tmp_path, "P0,2026-01-05T06:00:00Z,110,,,0.8,70\n" + body), record_prefix="X")
    assert expected in str(error.value) and "nothing imported" in str(error.value) and "bad.csv" in str(error.value)
    assert store.patients() == []


def test_bad_csv_files(node, tmp_path):
    store, vault = node
    with pytest.raises(RecordFileError, match="header lacks column"):
        read_twin_csv(_csv(tmp_path, "", header="patient_id,cgm_mgdl\nP1,120\n"))
    with pytest.raises(RecordFileError, match="no such file"):
        read_twin_csv(tmp_path / "absent.csv")
    with pytest.raises(RecordFileError, match="holds no values"):
        read_twin_csv(_csv(tmp_path, "P1,2026-01-05T07:00:00Z,,,,,\n"))
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    with pytest.raises(RecordFileError, match="holds no rows"):
        read_twin_csv(empty)
    problems = "".join(f"P1,2026-01-05T07:{m:02d}:00Z,999,,,,\n" for m in range(30))
    with pytest.raises(TwinFileError, match=r"(?s)30 problem\(s\).*… and 10 more"):
        read_twin_csv(_csv(tmp_path, problems))


def test_a_record_too_short_to_forecast_is_kept_incomplete(node, tmp_path):
    store, vault = node
    report = import_file(store, vault, _csv(tmp_path, "P1,2026-01-05T07:00:00Z,120,,,0.8,\n"), record_prefix="X")
    assert report.cohorts == {"incomplete": 1}


def _bundle(records, tmp_path):
    path = write_records(records[:1], tmp_path / "ok.json", format="fhir")
    return json.loads(path.read_text())


def _entry(bundle, resource_type, predicate=lambda r: True):
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type and predicate(e["resource"]))


def _is_bolus(r):
    return "dose" in r.get("dosage", {})


def _break(change):
    def apply(bundle):
        change(bundle)
        return bundle
    return apply


@pytest.mark.parametrize(
    "change, expected",
    [
        (_break(lambda b: _entry(b, "Observation", lambda r: r["code"]["coding"][0]["code"] == "99504-3")["valueQuantity"].update(value=900)),
         "cgm_mgdl = 900 is outside [20, 600]"),
        (_break(lambda b: _entry(b, "Observation", lambda r: r["code"]["coding"][0]["code"] == "99504-3")["valueQuantity"].update(code="mg", unit="mg")),
         "valueQuantity is in 'mg'; expected mg/dL or mmol/L"),
        (_break(lambda b: _entry(b, "Observation", lambda r: r["code"]["coding"][0]["code"] == "9059-7")["valueQuantity"].update(value="lots")),
         "valueQuantity.value"),
        (_break(lambda b: _entry(b, "Observation", lambda r: r["code"]["coding"][0]["code"] == "99504-3").update(effectiveDateTime="2026-01-05T07:00:00")),
         "effectiveDateTime: Value error, DateTime value string does not match"),  # FHIR: a time needs a zone
        (_break(lambda b: _entry(b, "Observation", lambda r: r["code"]["coding"][0]["code"] == "99504-3").update(effectiveDateTime="2026-01-05")),
         "not a date-time to the minute"),
        (_break(lambda b: _entry(b, "Observation").update(subject={"reference": "Patient/nobody"})),
         "subject.reference 'Patient/nobody' names no Patient of this file"),
        (_break(lambda b: _entry(b, "MedicationAdministration", _is_bolus)["dosage"]["dose"].update(value=70)),
         "bolus_u = 70 is outside [0, 50]"),
        (_break(lambda b: _entry(b, "MedicationAdministration", _is_bolus).update(
            medicationCodeableConcept={"text": "paracetamol"})), "not recognisably insulin"),
        (_break(lambda b: _entry(b, "MedicationAdministration", lambda r: not _is_bolus(r))["dosage"]["rateQuantity"].update(code="U/min", unit="U/min")),
         "dosage.rateQuantity is in 'U/min'; expected U/h"),
        (_break(lambda b: _entry(b, "MedicationAdministration", _is_bolus).update(dosage={})),
         "dosage must have either dose"),
        (_break(lambda b: b["entry"].append({"fullUrl": "x"})), "no resource"),
    ],
)
def test_bad_bundle_entries_are_named_and_nothing_is_imported(records, node, tmp_path, change, expected):
    store, vault = node
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(change(_bundle(records, tmp_path))))
    with pytest.raises(TwinFileError) as error:
        import_file(store, vault, path, record_prefix="X")
    assert expected in str(error.value) and "entry" in str(error.value) and "nothing imported" in str(error.value)
    assert store.patients() == []


def test_bundle_details(records, tmp_path):
    bundle = _bundle(records, tmp_path)
    reading = _entry(bundle, "Observation", lambda r: r["code"]["coding"][0]["code"] == "99504-3")
    reading["valueQuantity"] = {"value": 7.0, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    cancelled = json.loads(json.dumps(reading))
    cancelled.update(status="entered-in-error", valueQuantity={"value": 9000, "unit": "mg/dL", "code": "mg/dL"})
    bundle["entry"].append({"resource": cancelled})
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bundle))
    (record,) = read_twin_bundle(path)
    minute = int((datetime.fromisoformat(reading["effectiveDateTime"].replace("Z", "+00:00")) - record.start).total_seconds() // 60)
    assert record.cgm_mgdl[minute] == pytest.approx(7.0 * 18.016)
    for text, expected in [("[1, 2]", "not a FHIR Bundle, resource or NDJSON"), ("{", "not valid JSON"),
                           ('{"resourceType": "Bundle", "type": "collection"}', "no entries")]:
        path.write_text(text)
        with pytest.raises(TwinFileError, match=expected):
            read_twin_bundle(path)
    with pytest.raises(TwinFileError, match="no such file"):
        read_twin_bundle(tmp_path / "absent.json")
    assert records[0].start == datetime(2026, 1, 5, tzinfo=timezone.utc)
