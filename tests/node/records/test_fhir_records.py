"""FHIR R4 Bundle import (node/records/heart_fhir.py, heart_fhir_export.py): the round trip CSV -> Bundle -> store equals the CSV import, and
every kind of bad input is refused with its entry, resource and field named, nothing written."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from node import admin
from node.records import RecordFileError
from node.records.heart_csv import read_heart_disease_csv
from node.records.heart_fhir import LOCAL_SYSTEM, BundleError, import_bundle, import_bundle_file, read_bundle
from node.records.heart_fhir_export import bundle_from_records, export_csv_as_bundle
from node.store import Store
from node.vault import Vault

DATA = Path(__file__).resolve().parents[3] / "deploy" / "data" / "heart-disease"


def _node(home: Path):
    settings = admin.init_node(home, hospital="va", rpc_url="unused", deployment_file=None)
    return settings, Store(settings.resolved_database_url), Vault.open(settings.data_key_file)


def _contents(store: Store, vault: Vault) -> dict[str, tuple[str, dict]]:
    return {p.record_number: (p.cohort, vault.open_record(p.clinical, associated=p.pseudonym)) for p in store.patients()}


@pytest.mark.parametrize("hospital", ["va", "switzerland", "cleveland"])
def test_csv_to_bundle_to_store_equals_the_csv_import(tmp_path, hospital):
    csv = DATA / f"processed.{hospital}.data"
    settings, store, vault = _node(tmp_path / "by-csv")
    admin.import_records(settings, csv, record_prefix="HOS")
    bundle = export_csv_as_bundle(csv, tmp_path / "bundle.json", record_prefix="HOS")
    _, fhir_store, fhir_vault = _node(tmp_path / "by-fhir")
    report = import_bundle_file(fhir_store, fhir_vault, bundle, record_prefix="OTHER")

    by_csv, by_fhir = _contents(store, vault), _contents(fhir_store, fhir_vault)
    assert by_fhir == by_csv  # same record numbers, cohorts (FLamby's split) and clinical values, missing ones too
    assert report.imported == len(by_csv) and report.already_present == 0
    assert report.cohorts == {c: sum(1 for cohort, _ in by_csv.values() if cohort == c) for c in report.cohorts}
    pseudonyms = [p.pseudonym for p in fhir_store.patients()]
    assert len(set(pseudonyms)) == len(pseudonyms) and all(len(p) == 66 and p.startswith("0x") for p in pseudonyms)
    assert {p.source for p in fhir_store.patients()} == {"bundle.json"}
    # Importing the same Bundle again adds nothing.
    again = import_bundle_file(fhir_store, fhir_vault, bundle, record_prefix="OTHER")
    assert again.imported == 0 and again.already_present == len(by_csv)


def test_the_exported_bundle_is_valid_fhir_r4_with_loinc_and_ucum(tmp_path):
    from fhir.resources.R4B.bundle import Bundle

    records = read_heart_disease_csv(DATA / "processed.cleveland.data", record_prefix="CLE")[:3]
    document = bundle_from_records(records)
    Bundle.model_validate(document)
    codes = {(e["resource"]["code"]["coding"][0]["system"], e["resource"]["code"]["coding"][0]["code"])
             for e in document["entry"] if e["resource"]["resourceType"] == "Observation"}
    assert ("http://loinc.org", "8480-6") in codes and ("http://loinc.org", "2093-3") in codes
    # thalach is the maximum heart rate of an exercise test: never LOINC 8867-4 (a heart rate, resting).
    assert ("http://loinc.org", "8867-4") not in codes and (LOCAL_SYSTEM, "thalach") in codes
    assert (LOCAL_SYSTEM, "num") in codes
    pressure = next(e["resource"] for e in document["entry"]
                    if e["resource"].get("code", {}).get("coding", [{}])[0].get("code") == "8480-6")
    assert pressure["valueQuantity"]["system"] == "http://unitsofmeasure.org"
    assert pressure["valueQuantity"]["code"] == "mm[Hg]"


def _small() -> dict:
    return bundle_from_records([("CLE-1", {"age": 63.0, "sex": 1.0, "cp": 1.0, "trestbps": 145.0, "chol": 233.0,
                                           "fbs": 1.0, "restecg": 2.0, "thalach": 150.0, "exang": 0.0, "oldpeak": 2.3,
                                           "slope": 3.0, "ca": 0.0, "thal": 6.0, "num": 0.0})])


def _entry(document: dict, code: str) -> tuple[int, dict]:
    for index, entry in enumerate(document["entry"], start=1):
        coding = entry["resource"].get("code", {}).get("coding", [{}])
        if coding[0].get("code") == code:
            return index, entry["resource"]
    raise KeyError(code)


def test_age_from_birth_date_or_an_age_observation_and_other_units():
    document = _small()
    assert read_bundle(json.dumps(document), source="b", record_prefix="X")[0] == (
        "CLE-1", {"age": 63.0, "sex": 1.0, "cp": 1.0, "trestbps": 145.0, "chol": 233.0, "fbs": 1.0, "restecg": 2.0,
                  "thalach": 150.0, "exang": 0.0, "oldpeak": 2.3, "slope": 3.0, "ca": 0.0, "thal": 6.0, "num": 0.0})
    # The day before the 64th birthday the patient is still 63; an age Observation overrides the birth date.
    document["entry"][0]["resource"]["birthDate"] = "1924-06-02"
    assert read_bundle(json.dumps(document), source="b", record_prefix="X")[0][1]["age"] == 63.0
    subject = document["entry"][0]["fullUrl"]
    document["entry"].append({"resource": {
        "resourceType": "Observation", "status": "final", "subject": {"reference": subject},
        "code": {"coding": [{"system": "http://loinc.org", "code": "30525-0"}]},
        "valueQuantity": {"value": 61.5, "system": "http://unitsofmeasure.org", "code": "a"}}})
    _, chol = _entry(document, "2093-3")
    chol["valueQuantity"] = {"value": 6.0, "system": "http://unitsofmeasure.org", "code": "mmol/L", "unit": "mmol/L"}
    _, fbs = _entry(document, "fbs")
    fbs.update(code={"coding": [{"system": "http://loinc.org", "code": "1558-6"}]}, status="amended")
    del fbs["valueBoolean"]
    fbs["valueQuantity"] = {"value": 99, "system": "http://unitsofmeasure.org", "code": "mg/dL"}
    clinical = read_bundle(json.dumps(document), source="b", record_prefix="X")[0][1]
    assert clinical["age"] == 61.5 and clinical["chol"] == pytest.approx(232.02) and clinical["fbs"] == 0.0


def test_missing_values_make_an_incomplete_record_not_an_error(tmp_path):
    document = _small()
    _, chol = _entry(document, "2093-3")
    del chol["valueQuantity"]
    chol["dataAbsentReason"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                            "code": "not-performed"}]}
    document["entry"].append({"resource": {"resourceType": "Patient", "id": "no-data", "gender": "unknown",
                                           "identifier": [{"value": "CLE-2"}]}})
    _, store, vault = _node(tmp_path / "n")
    report = import_bundle(store, vault, json.dumps(document), source="b.json", record_prefix="X")
    assert report.imported == 2 and report.incomplete == 2
    contents = _contents(store, vault)
    assert contents["CLE-1"][1]["chol"] is None and contents["CLE-2"][1]["sex"] is None


def test_without_an_identifier_the_record_number_is_the_prefix_and_the_resource_id():
    document = _small()
    del document["entry"][0]["resource"]["identifier"]
    ident = document["entry"][0]["resource"]["id"]
    assert read_bundle(json.dumps(document), source="b", record_prefix="CLE")[0][0] == f"CLE-{ident}"
    # Without an id either, the patient is rejected with the reason, never numbered by position.
    del document["entry"][0]["resource"]["id"]
    records = read_bundle(json.dumps(document), source="b", record_prefix="CLE")
    assert list(records) == [] and "no identifier" in records.rejected[0][1]


def _problem(document, *, data: str | None = None) -> str:
    with pytest.raises(BundleError) as caught:
        read_bundle(data if data is not None else json.dumps(document), source="upload.json", record_prefix="X")
    assert isinstance(caught.value, RecordFileError)  # the CLI and the console treat it like a bad CSV file
    return str(caught.value)


def _edit(code: str, change) -> tuple[int, str]:
    document = _small()
    index, resource = _entry(document, code)
    change(resource, document)
    return index, _problem(document)


def test_malformed_json_and_wrong_documents():
    assert "not valid JSON" in _problem(None, data='{"resourceType": "Bundle", ') and "line 1" in _problem(None, data="{")
    assert "not UTF-8" in _problem(None, data=b"\xff\xfe{}")
    assert "not a FHIR Bundle, resource or NDJSON (found a JSON list)" in _problem([1, 2])
    assert "not a FHIR Bundle" in _problem({"resource": "Patient"})
    assert "Bundle.entry must be a list" in _problem({"resourceType": "Bundle", "entry": {}})
    assert "holds no Patient" in _problem({"resourceType": "Bundle", "type": "collection", "entry": []})
    assert "holds no Patient" in _problem({"resourceType": "Observation", "status": "final"})
    assert "entry 1: no resource" in _problem({"resourceType": "Bundle", "entry": [{"fullUrl": "x"}]})


def test_other_resource_types_are_skipped_and_counted_and_invalid_resources_refused():
    document = _small()
    document["entry"].insert(1, {"resource": {"resourceType": "Condition", "id": "c1"}})
    document["entry"].insert(1, {"resource": {"resourceType": "Encounter", "id": "e1"}})
    records = read_bundle(json.dumps(document), source="b", record_prefix="X")
    assert len(records) == 1 and records.skipped == {"Condition": 1, "Encounter": 1}
    document = _small()
    document["entry"][0]["resource"]["birthDate"] = "not a date"
    message = _problem(document)
    assert "entry 1 (Patient" in message and "birthDate" in message
    document = _small()
    document["entry"][0]["resource"]["gender"] = "robot"
    assert "gender: 'robot'" in _problem(document)


def test_unknown_codes_wrong_units_and_value_types_name_the_entry_and_field():
    document = _small()
    _entry(document, "8480-6")[1]["code"]["coding"][0].update(code="9999-9")
    records = read_bundle(json.dumps(document), source="b", record_prefix="X")
    assert records[0][1]["trestbps"] is None and records.skipped == {"Observation 9999-9 (unknown code)": 1}
    index, message = _edit("8480-6", lambda r, d: r["valueQuantity"].update(code="kPa", unit="kPa"))
    assert f"entry {index} (Observation" in message and "field trestbps: unit http://unitsofmeasure.org|kPa" in message
    _, message = _edit("8480-6", lambda r, d: r["valueQuantity"].pop("system"))
    assert "field trestbps: unit ?|mm[Hg] is not accepted; expected UCUM mm[Hg]" in message
    _, message = _edit("cp", lambda r, d: (r.pop("valueInteger"), r.update(valueString="typical")))
    assert "field cp: expected valueInteger, got valueString" in message
    _, message = _edit("exang", lambda r, d: r.pop("valueBoolean"))
    assert "field exang: no value and no dataAbsentReason" in message


def test_out_of_range_values_and_statuses():
    _, message = _edit("8480-6", lambda r, d: r["valueQuantity"].update(value=400))
    assert "field trestbps: 400 mm[Hg] is outside [0, 300] mm[Hg]" in message
    _, message = _edit("cp", lambda r, d: r.update(valueInteger=9))
    assert "field cp: 9 is outside [1, 4]" in message
    _, message = _edit("2093-3", lambda r, d: r.update(status="preliminary"))
    assert "status: 'preliminary'" in message
    document = _small()
    document["entry"][0]["resource"]["birthDate"] = "1700-01-01"
    assert "field age: birthDate 1700-01-01 gives age 288" in _problem(document)
    # A result entered in error is left out, not imported and not refused.
    document = _small()
    _entry(document, "2093-3")[1]["status"] = "entered-in-error"
    assert read_bundle(json.dumps(document), source="b", record_prefix="X")[0][1]["chol"] is None


def test_observations_of_unknown_patients_duplicates_and_several_problems_at_once():
    index, message = _edit("8480-6", lambda r, d: r["subject"].update(reference="Patient/nobody"))
    assert f"entry {index} (Observation" in message and "subject: Patient/nobody is not a Patient of this file" in message
    document = _small()
    _, pressure = _entry(document, "8480-6")
    document["entry"].append({"resource": {**copy.deepcopy(pressure), "id": "later"}})
    document["entry"][-1]["resource"]["valueQuantity"]["value"] = 150
    assert "different values at the same time" in _problem(document)
    document["entry"][-1]["resource"]["effectiveDateTime"] = "1988-06-02"
    records = read_bundle(json.dumps(document), source="b", record_prefix="X")
    assert records[0][1]["trestbps"] == 150  # the latest measurement wins
    assert records.provenance["CLE-1"]["trestbps"] == {"resource": "later", "system": "http://loinc.org",
                                                      "code": "8480-6", "time": "1988-06-02T00:00:00+00:00", "not_used": 1}
    document = _small()
    document["entry"].append(copy.deepcopy(document["entry"][0]))
    message = _problem(document)
    assert "names two Patients" in message and "record number 'CLE-1' repeats entry 1" in message
    document = _small()
    _entry(document, "8480-6")[1]["valueQuantity"]["value"] = 999
    _entry(document, "num")[1]["valueInteger"] = 7
    message = _problem(document)
    assert message.startswith("upload.json: 2 problem(s), nothing imported") and "trestbps" in message and "num" in message


def test_nothing_is_written_when_a_bundle_is_refused(tmp_path):
    _, store, vault = _node(tmp_path / "n")
    document = _small()
    document["entry"].append({"resource": {"resourceType": "Patient", "id": "p2", "identifier": [{"value": "CLE-2"}]}})
    _entry(document, "8480-6")[1]["valueQuantity"]["value"] = -5
    with pytest.raises(BundleError):
        import_bundle(store, vault, json.dumps(document), source="b.json", record_prefix="X")
    assert store.patients() == []
