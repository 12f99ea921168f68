"""Real FHIR R4 as hospitals send it (tests/data/fhir/README.md: Synthea transaction Bundles, an NDJSON bulk
export, HL7's own R4 examples, the HL7 CGM guide's examples) through node.records.import_file: what is read, what
is skipped and counted, what is refused and why, and what happens to a record already present."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from node.records import RecordFileError, fhir_input, import_file

DATA = Path(__file__).resolve().parents[2] / "data" / "fhir"
SYNTHEA = sorted((DATA / "synthea").glob("*.json"))
CLEMENTE = DATA / "synthea" / "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json"
LUPE = DATA / "synthea" / "Lupe_Little_f8a42e66-8c03-4ee6-85e3-3817c2942de1.json"
MAGGIO = DATA / "synthea" / "Louis_Maggio_2e275d4b-855a-4eb2-9021-5410aa8acd4f.json"
BULK = DATA / "bulk" / "synthea-export.ndjson"
CGM = DATA / "cgm" / "cgm-ig-examples.json"
UCUM = "http://unitsofmeasure.org"


def _clinical(store, vault, number):
    patient = next(p for p in store.patients() if p.record_number == number)
    return patient, vault.open_record(patient.clinical, associated=patient.pseudonym)


def _write(tmp_path, name, document) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_every_synthea_bundle_imports_as_an_incomplete_heart_record_with_blood_pressure_from_the_panel(node):
    store, vault = node
    for path in SYNTHEA:
        report = import_file(store, vault, path, record_prefix="SYN")
        assert (report.imported, report.rejected, report.cohorts) == (1, 0, {"incomplete": 1}), path.name
        assert report.format == "bundle" and report.skipped["Encounter"] >= 1 and report.skipped["Claim"] >= 1
        assert report.skipped["component 8462-4: diastolic blood pressure (not read)"] >= 1
    assert {p.kind for p in store.patients()} == {"heart-disease"}  # lab glucose never made a twin
    patient, clinical = _clinical(store, vault, "1484a42d-0eaf-4654-9cbf-6b050a5cd73b")  # the MR, not the SSN
    assert clinical["sex"] == 1.0 and clinical["age"] == 34.0 and clinical["trestbps"] is not None
    assert clinical["chol"] is not None and clinical["thalach"] is None and clinical["num"] is None
    assert all("999-" not in p.record_number for p in store.patients())  # no social security number stored


def test_the_latest_measurement_is_kept_with_its_provenance(node):
    store, vault = node
    report = import_file(store, vault, CLEMENTE, record_prefix="SYN")
    provenance = report.provenance["1484a42d-0eaf-4654-9cbf-6b050a5cd73b"]
    document = json.loads(CLEMENTE.read_text())
    panels = [e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Observation"
              and e["resource"]["code"]["coding"][0]["code"] == "55284-4"]
    latest = max(panels, key=lambda r: r["effectiveDateTime"])
    assert provenance["trestbps"]["resource"] == latest["id"] and provenance["trestbps"]["code"] == "8480-6"
    assert provenance["trestbps"]["not_used"] == len(panels) - 1
    systolic = next(c for c in latest["component"] if c["code"]["coding"][0]["code"] == "8480-6")
    assert _clinical(store, vault, "1484a42d-0eaf-4654-9cbf-6b050a5cd73b")[1]["trestbps"] == systolic["valueQuantity"]["value"]


def test_transaction_deletes_and_reads_are_skipped_and_counted(node, tmp_path):
    store, vault = node
    document = json.loads(CLEMENTE.read_text())
    document["entry"].append({"request": {"method": "DELETE", "url": "Observation/old"}})
    document["entry"].append({"request": {"method": "GET", "url": "Patient?name=x"}})
    document["entry"].append({"resource": {"resourceType": "OperationOutcome", "issue": []}, "search": {"mode": "outcome"}})
    report = import_file(store, vault, _write(tmp_path, "tx.json", document), record_prefix="SYN")
    assert report.imported == 1
    assert report.skipped["DELETE request"] == 1 and report.skipped["GET request"] == 1
    assert report.skipped["OperationOutcome"] == 1


def test_an_ndjson_bulk_export_is_read_as_fhir_not_as_the_uci_csv(node, tmp_path):
    store, vault = node
    report = import_file(store, vault, BULK, record_prefix="SYN")
    assert report.format == "ndjson" and report.imported == 3 and report.skipped["Encounter"] == 16
    # The same export under another name, with a byte-order mark, is still NDJSON; the same values: unchanged.
    renamed = tmp_path / "export.txt"
    renamed.write_bytes(b"\xef\xbb\xbf" + BULK.read_bytes())
    again = import_file(store, vault, renamed, record_prefix="SYN")
    assert again.format == "ndjson" and again.already_present == 3 and again.imported == 0
    assert [p.outcome for p in again.patients] == ["unchanged"] * 3


def test_a_byte_order_mark_routes_neither_a_bundle_nor_a_twins_csv_wrongly(node, tmp_path):
    store, vault = node
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + CLEMENTE.read_bytes())
    assert import_file(store, vault, bom, record_prefix="SYN").imported == 1
    twins = tmp_path / "twins.csv"
    twins.write_bytes(b"\xef\xbb\xbfpatient_id,time,cgm_mgdl\nT1,2026-01-05T07:00:00Z,120\n")
    report = import_file(store, vault, twins, record_prefix="T")
    assert report.imported == 1 and _clinical(store, vault, "T1")[0].kind == "diabetes"


def test_each_file_is_parsed_once(node, monkeypatch):
    store, vault = node
    calls = []
    parse = fhir_input.parse
    monkeypatch.setattr(fhir_input, "parse", lambda *a, **k: calls.append(1) or parse(*a, **k))
    import_file(store, vault, MAGGIO, record_prefix="SYN")
    import_file(store, vault, CGM, record_prefix="CGM")
    assert len(calls) == 2


def _hl7_bundle(*observations: str) -> dict:
    """HL7's R4 examples name `Patient/example`: the Bundle adds that Patient (with a medical record number)."""
    patient = {"resourceType": "Patient", "id": "example", "gender": "male", "birthDate": "1960-01-01",
               "identifier": [{"type": {"coding": [{"system": fhir_input.V2_IDENTIFIER_TYPE, "code": "MR"}]},
                               "system": "urn:hospital:mrn", "value": "MRN-1"}]}
    resources = [json.loads((DATA / "hl7" / name).read_text()) for name in observations]
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in [patient, *resources]]}


def test_hl7_blood_pressure_panel_is_read_by_component_and_a_heart_rate_is_not_thalach(node, tmp_path):
    store, vault = node
    with pytest.raises(RecordFileError, match="Patient/example is not a Patient of this file"):
        import_file(store, vault, DATA / "hl7" / "observation-example-bloodpressure.json", record_prefix="H")
    document = _hl7_bundle("observation-example-bloodpressure.json", "observation-example-heart-rate.json")
    report = import_file(store, vault, _write(tmp_path, "hl7.json", document), record_prefix="H")
    clinical = _clinical(store, vault, "MRN-1")[1]
    assert clinical["trestbps"] == 107 and clinical["thalach"] is None
    assert report.skipped == {
        "component 8462-4: diastolic blood pressure (not read)": 1,
        "Observation 8867-4: heart rate (a resting rate, not thalach, the exercise-test maximum)": 1}


def _glucose(value, unit="mg/dL", code="1558-6", **extra) -> dict:
    return {"resourceType": "Observation", "id": f"g{abs(hash((value, unit, code))) % 10**6}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "subject": {"reference": "Patient/example"},
            "effectiveDateTime": "2012-09-17", "valueQuantity": {"value": value, "system": UCUM, "code": unit}, **extra}


@pytest.mark.parametrize("value, unit, code, expected", [
    (130, "mg/dL", "1558-6", 1.0), (99, "mg/dL", "1558-6", 0.0), (7.0, "mmol/L", "14771-0", 1.0),
    (5.0, "mmol/L", "1558-6", 0.0)])
def test_fasting_glucose_becomes_the_flag_after_its_value_is_checked(node, tmp_path, value, unit, code, expected):
    store, vault = node
    document = _hl7_bundle()
    document["entry"].append({"resource": _glucose(value, unit, code)})
    import_file(store, vault, _write(tmp_path, "g.json", document), record_prefix="H")
    assert _clinical(store, vault, "MRN-1")[1]["fbs"] == expected


@pytest.mark.parametrize("resource, expected", [
    (_glucose(99999), "99999 mg/dL is outside [10, 2000] mg/dL"),
    (_glucose(-40), "-40 mg/dL is outside [10, 2000] mg/dL"),
    (_glucose(400, unit="mmol/L"), "400 mmol/L (7206.4 mg/dL) is outside"),
    (_glucose(100, status="preliminary"), "status: 'preliminary'"),
    ({**_glucose(100), "valueQuantity": {"value": 100, "comparator": "<", "system": UCUM, "code": "mg/dL"}},
     "the value is <100, not an exact value"),
    ({**_glucose(100), "valueQuantity": {"value": 100, "unit": "mg/dL"}}, "unit ?|mg/dL is not accepted"),
])
def test_impossible_glucose_comparators_preliminary_results_and_non_ucum_units_are_refused(node, tmp_path, resource,
                                                                                             expected):
    store, vault = node
    document = _hl7_bundle()
    document["entry"].append({"resource": resource})
    with pytest.raises(RecordFileError) as refused:
        import_file(store, vault, _write(tmp_path, "g.json", document), record_prefix="H")
    assert expected in str(refused.value) and "nothing imported" in str(refused.value)
    assert store.patients() == []


def test_lab_glucose_is_not_cgm_and_never_makes_a_twin(node):
    store, vault = node
    for path in (LUPE, MAGGIO):
        assert '"2339-0"' in path.read_text()
        import_file(store, vault, path, record_prefix="SYN")
    assert {p.kind for p in store.patients()} == {"heart-disease"}


def test_the_cgm_guide_examples_import_as_a_twin_with_the_molar_reading_converted(node):
    store, vault = node
    report = import_file(store, vault, CGM, record_prefix="CGM")
    assert report.imported == 1 and report.cohorts == {"incomplete": 1}  # two readings: no forecasting window
    patient, clinical = _clinical(store, vault, "ee8d4ac0-545c-4501-8d7e-646bfbda1db5")
    assert patient.kind == "diabetes"
    assert clinical["cgm_mgdl"] == [[0, 120.0], [15, round(6.7 * 18.016, 4)]]
    assert report.skipped == {"Observation (a code the twins do not read)": 1}  # the monthly mean


def _cgm_document() -> dict:
    return json.loads(CGM.read_text())


def _reading(document) -> dict:
    return next(e["resource"] for e in document["entry"] if e["resource"]["id"] == "cgmSensorReadingMassPerVolumeExample")


def test_a_cgm_reading_with_a_data_absent_reason_is_skipped_and_counted(node, tmp_path):
    store, vault = node
    document = _cgm_document()
    absent = copy.deepcopy(_reading(document))
    absent.update(id="absent", effectiveDateTime="2024-05-02T10:20:00Z",
                  dataAbsentReason={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                                "code": "error"}]})
    del absent["valueQuantity"]
    document["entry"].append({"resource": absent})
    report = import_file(store, vault, _write(tmp_path, "cgm.json", document), record_prefix="CGM")
    assert report.imported == 1
    assert report.skipped["Observation CGM reading without a value (dataAbsentReason)"] == 1


@pytest.mark.parametrize("change, expected", [
    (lambda r: r.update(status="preliminary"), "status 'preliminary'"),
    (lambda r: r["valueQuantity"].pop("system"), "is not coded in UCUM"),
    (lambda r: r["valueQuantity"].update(comparator=">"), "not an exact value"),
])
def test_cgm_readings_that_are_preliminary_non_ucum_or_inexact_are_refused(node, tmp_path, change, expected):
    store, vault = node
    document = _cgm_document()
    change(_reading(document))
    with pytest.raises(RecordFileError, match=expected):
        import_file(store, vault, _write(tmp_path, "cgm.json", document), record_prefix="CGM")
    assert store.patients() == []


# ---- nothing dropped without a word ----


def test_new_values_for_a_record_already_present_update_it_and_say_what_changed(node, tmp_path):
    store, vault = node
    import_file(store, vault, CLEMENTE, record_prefix="SYN")
    before, clinical = _clinical(store, vault, "1484a42d-0eaf-4654-9cbf-6b050a5cd73b")
    document = json.loads(CLEMENTE.read_text())
    later = copy.deepcopy(next(e for e in document["entry"] if e["resource"]["resourceType"] == "Observation"
                               and e["resource"]["code"]["coding"][0]["code"] == "2093-3"))
    later["resource"].update(id="newer-cholesterol", effectiveDateTime="2020-01-01T00:00:00Z")
    later["resource"]["valueQuantity"]["value"] = 301.0
    document["entry"].append(later)
    report = import_file(store, vault, _write(tmp_path, "newer.json", document), record_prefix="SYN")
    assert (report.imported, report.updated, report.already_present) == (0, 1, 0)
    assert report.patients[0].outcome == "updated" and "chol" in report.patients[0].reasons[0]
    after, updated = _clinical(store, vault, "1484a42d-0eaf-4654-9cbf-6b050a5cd73b")
    assert updated["chol"] == 301.0 and after.pseudonym == before.pseudonym and after.source == "newer.json"


def test_a_twins_file_naming_a_heart_record_is_a_conflict_reported_not_a_silent_skip(node, tmp_path):
    store, vault = node
    document = _hl7_bundle()
    import_file(store, vault, _write(tmp_path, "heart.json", document), record_prefix="H")
    cgm = _cgm_document()
    cgm["entry"][0]["resource"]["identifier"] = document["entry"][0]["resource"]["identifier"]  # MRN-1
    report = import_file(store, vault, _write(tmp_path, "cgm.json", cgm), record_prefix="CGM")
    assert (report.imported, report.rejected) == (0, 1)
    assert "already holds a heart-disease record" in report.patients[0].reasons[0]
    assert _clinical(store, vault, "MRN-1")[0].kind == "heart-disease"


# ---- patient identity (issue 12, item 7) ----


def _patient(ident, identifiers) -> dict:
    return {"resourceType": "Patient", "id": ident, "identifier": identifiers, "gender": "female"}


SSN = {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-11-2222",
       "type": {"coding": [{"system": fhir_input.V2_IDENTIFIER_TYPE, "code": "SS"}]}}


def test_a_national_identifier_listed_first_is_never_the_record_number(node, tmp_path):
    store, vault = node
    mr = {"system": "urn:hospital", "value": "H-7", "type": {"coding": [{"system": fhir_input.V2_IDENTIFIER_TYPE, "code": "MR"}]}}
    cgm = _cgm_document()
    cgm["entry"][0]["resource"]["identifier"] = [SSN, mr]
    import_file(store, vault, _write(tmp_path, "a.json", cgm), record_prefix="CGM")
    cgm["entry"][0]["resource"]["identifier"] = [SSN]
    cgm["entry"][0]["resource"]["id"] = "other"
    for entry in cgm["entry"][1:]:
        entry["resource"]["subject"]["reference"] = "Patient/other"
    import_file(store, vault, _write(tmp_path, "b.json", cgm), record_prefix="CGM")
    assert sorted(p.record_number for p in store.patients()) == ["CGM-other", "H-7"]


def test_patients_sharing_a_value_under_different_systems_are_different_and_never_merged(node, tmp_path):
    store, vault = node
    cgm = _cgm_document()
    second = copy.deepcopy(cgm["entry"][0])
    second["resource"].update(id="twin2", identifier=[{"system": "http://other.example", "value": "ee8d4ac0-545c-4501-8d7e-646bfbda1db5"}])
    second.pop("fullUrl")
    readings = [copy.deepcopy(e) for e in cgm["entry"][1:3]]
    for entry in readings:
        entry.pop("fullUrl")
        entry["resource"]["subject"]["reference"] = "Patient/twin2"
    cgm["entry"] += [second, *readings]
    report = import_file(store, vault, _write(tmp_path, "two.json", cgm), record_prefix="CGM")
    assert report.imported == 0 and report.rejected == 2 and store.patients() == []
    assert all("two different patients" in p.reasons[0] for p in report.patients)


def test_patients_without_an_identifier_never_collapse_into_one_record_number(node, tmp_path):
    store, vault = node
    for ident in ("first", "second"):
        cgm = _cgm_document()
        cgm["entry"][0]["resource"].pop("identifier")
        cgm["entry"][0]["resource"]["id"] = ident
        for entry in cgm["entry"][1:]:
            entry["resource"]["subject"]["reference"] = f"Patient/{ident}"
        report = import_file(store, vault, _write(tmp_path, f"{ident}.json", cgm), record_prefix="CLE")
        assert report.imported == 1
    assert sorted(p.record_number for p in store.patients()) == ["CLE-first", "CLE-second"]
    cgm = _cgm_document()
    cgm["entry"][0]["resource"].pop("identifier")
    cgm["entry"][0]["resource"].pop("id")
    report = import_file(store, vault, _write(tmp_path, "anon.json", cgm), record_prefix="CLE")
    assert report.rejected == 1 and report.imported == 0 and "no identifier" in report.patients[0].reasons[0]


# ---- JSON depth (issue 12, item 2) ----

DEPTH_ATTACK = textwrap.dedent("""
    import json, sys, tempfile
    from pathlib import Path
    import web3  # noqa: F401  (py_ecc raises the recursion limit to 100000, as in the node and its console)
    assert sys.getrecursionlimit() >= 100000, sys.getrecursionlimit()
    from node.records import RecordFileError, import_file
    from node.store import Store
    from node.vault import Vault, create_key_file
    folder = Path(tempfile.mkdtemp())
    create_key_file(folder / "k")
    store, vault = Store(f"sqlite:///{folder / 'n.db'}"), Vault.open(folder / "k")
    # Written as text: the node's sane recursion limit (contracts/ledger) may already hold in this process, and
    # json.dumps of 900 nested objects would need more.
    extension = ('{"url": "http://example.org/x", "extension": [' * 900
                 + '{"url": "http://example.org/x", "valueString": "leaf"}' + "]}" * 900)
    patient = '{"resourceType": "Patient", "id": "deep", "extension": [' + extension + "]}"
    files = {"extensions.json": '{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": '
                                + patient + "}]}",
             "deep.json": "[" * 100000 + "]" * 100000,
             "deep.ndjson": patient + "\\n" + patient + "\\n"}
    for name, text in files.items():
        (folder / name).write_text(text)
        try:
            import_file(store, vault, folder / name, record_prefix="X")
        except RecordFileError as exc:
            print(name, "refused:", str(exc).splitlines()[0])
        else:
            print(name, "IMPORTED")
""")


def test_nesting_depth_is_checked_before_parsing_strings_aside():
    fhir_input.check_depth('{"a": "[[[[[[[[[[{{{{{{{{{{"}', source="s")  # brackets inside strings do not count
    fhir_input.check_depth("[" * 64 + "]" * 64, source="s")
    with pytest.raises(RecordFileError, match=r"s: the JSON is nested more than 64 levels deep \(line 2\)"):
        fhir_input.parse("{\n" + "[" * 100000 + "]" * 100000 + "}", source="s")


@pytest.mark.slow  # a fresh interpreter importing web3
def test_deeply_nested_json_is_refused_before_parsing_even_with_web3s_recursion_limit(tmp_path):
    done = subprocess.run([sys.executable, "-c", DEPTH_ATTACK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # -11 was the segfault
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all("refused:" in line and "nested more than 64 levels" in line for line in lines), lines
