"""Each stored value keeps its provenance with the record (node/store.py PatientSource, sealed), and a record
number is the same patient across files only under the same identifier system (node/records/writer.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from sqlmodel import delete

from node.records import import_file, provenance
from node.records.provenance import LOCAL_RECORD_SYSTEM
from node.store import PatientSource
from node.vault import VaultError

DATA = Path(__file__).resolve().parents[2] / "data" / "fhir"
CLEMENTE = DATA / "synthea" / "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json"
NUMBER = "1484a42d-0eaf-4654-9cbf-6b050a5cd73b"
SYNTHEA_MRN_SYSTEM = "http://hospital.smarthealthit.org"
UCUM = "http://unitsofmeasure.org"


def _stored(store, vault, number):
    patient = next(p for p in store.patients() if p.record_number == number)
    with store.session() as session:
        source = session.get(PatientSource, patient.pseudonym)
    return patient, source, provenance.open_sealed(vault, source.provenance, pseudonym=patient.pseudonym)


def _clemente_with(tmp_path, *observations, identifier=None) -> Path:
    """Clemente's own Patient resource (as Synthea wrote it) with only the observations given."""
    document = json.loads(CLEMENTE.read_text())
    patient = copy.deepcopy(document["entry"][0])
    if identifier is not None:
        patient["resource"]["identifier"] = [identifier]
    entries = [patient] + [{"resource": {"resourceType": "Observation", "status": "final",
                                         "subject": {"reference": patient["fullUrl"]}, **o}} for o in observations]
    path = tmp_path / "later.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    return path


def _cholesterol(ident, when, mg_dl):
    return {"id": ident, "effectiveDateTime": when,
            "code": {"coding": [{"system": "http://loinc.org", "code": "2093-3"}]},
            "valueQuantity": {"value": mg_dl, "system": UCUM, "code": "mg/dL", "unit": "mg/dL"}}


def test_a_synthea_bundles_provenance_is_stored_with_the_record_sealed_and_bound_to_its_patient(node):
    store, vault = node
    report = import_file(store, vault, CLEMENTE, record_prefix="SYN")
    patient, source, stored = _stored(store, vault, NUMBER)
    assert source.identifier_system == SYNTHEA_MRN_SYSTEM  # the MR's system, not Synthea's own id or the SSN's
    assert stored["trestbps"] == {**report.provenance[NUMBER]["trestbps"], "source": CLEMENTE.name}
    assert stored["trestbps"]["system"] == "http://loinc.org" and stored["trestbps"]["code"] == "8480-6"
    assert stored["chol"]["resource"] and stored["chol"]["time"].startswith("20")
    assert set(stored) == {name for name, value in vault.open_record(
        patient.clinical, associated=patient.pseudonym).items() if value is not None}
    assert stored["sex"] == {"resource": "d78af07c-9cb9-4f31-9b11-c45a28f2eec8", "system": None,
                             "code": "Patient.gender", "time": None, "not_used": 0, "source": CLEMENTE.name}
    assert stored["trestbps"]["resource"].encode() not in source.provenance  # sealed, not in the clear
    with pytest.raises(VaultError):  # bound to its purpose: not openable as the clinical record
        vault.open_record(source.provenance, associated=patient.pseudonym)
    with pytest.raises(VaultError):  # nor as another patient's
        provenance.open_sealed(vault, source.provenance, pseudonym="0x" + "00" * 32)


def test_an_update_replaces_the_provenance_of_the_values_it_changes_and_keeps_the_rest(node, tmp_path):
    store, vault = node
    import_file(store, vault, CLEMENTE, record_prefix="SYN")
    _, _, before = _stored(store, vault, NUMBER)
    later = _clemente_with(tmp_path, _cholesterol("chol-2030", "2030-01-02T08:00:00Z", 222))
    report = import_file(store, vault, later, record_prefix="SYN")
    # The age is derived from the birth date at the newer index date: it changes too, and says so.
    assert report.updated == 1 and report.patients[-1].reasons == ["changed: age, chol"]
    _, _, after = _stored(store, vault, NUMBER)
    assert after["age"]["code"] == "Patient.birthDate" and after["age"]["time"] == "2030-01-02T08:00:00+00:00"
    assert after["chol"] == {"resource": "chol-2030", "system": "http://loinc.org", "code": "2093-3",
                             "time": "2030-01-02T08:00:00+00:00", "not_used": 0, "source": "later.json"}
    assert after["trestbps"] == before["trestbps"] and after["trestbps"]["source"] == CLEMENTE.name


def test_the_same_value_under_another_identifier_system_is_another_patient_and_never_merged(node, tmp_path):
    store, vault = node
    import_file(store, vault, CLEMENTE, record_prefix="SYN")
    patient, _, before = _stored(store, vault, NUMBER)
    other = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
             "system": "http://another-hospital.example/mrn", "value": NUMBER}
    report = import_file(store, vault, _clemente_with(tmp_path, _cholesterol("c", "2030-01-02T08:00:00Z", 222),
                                                      identifier=other), record_prefix="SYN")
    assert (report.imported, report.updated, report.rejected) == (0, 0, 1)
    (why,) = report.patients[0].reasons
    assert SYNTHEA_MRN_SYSTEM in why and "http://another-hospital.example/mrn" in why and "nothing changed" in why
    again, _, after = _stored(store, vault, NUMBER)
    assert again.clinical == patient.clinical and after == before


def _csv(tmp_path, number, chol) -> Path:
    path = tmp_path / "records.csv"  # two records: FLamby's split needs two
    path.write_text("record_number,age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal,num\n"
                    f"{number},63,1,1,145,{chol},1,2,150,0,2.3,3,0,6,0\n"
                    f"{number}b,67,1,4,160,286,0,2,108,1,1.5,2,3,3,2\n")
    return path


def test_a_csv_record_number_is_read_under_the_nodes_record_number_system(node, tmp_path):
    store, vault = node
    import_file(store, vault, _csv(tmp_path, "H-1", 233), record_prefix="H")
    _, source, stored = _stored(store, vault, "H-1")
    assert source.identifier_system == LOCAL_RECORD_SYSTEM
    assert stored["chol"] == {"line": 2, "source": "records.csv"}
    import_file(store, vault, _csv(tmp_path, "H-2", 233), record_prefix="H", record_system="urn:oid:1.2.3.4")
    assert _stored(store, vault, "H-2")[1].identifier_system == "urn:oid:1.2.3.4"
    # The EHR's FHIR export of the same patient, its MRN under the system the node was told: the same record.
    mrn = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
           "system": "urn:oid:1.2.3.4", "value": "H-2"}
    report = import_file(store, vault, _clemente_with(tmp_path, _cholesterol("c9", "2030-01-02T08:00:00Z", 250),
                                                      identifier=mrn), record_prefix="H")
    assert report.updated == 1 and _stored(store, vault, "H-2")[2]["chol"]["resource"] == "c9"
    # Under the default system it is not H-1's: another numbering, refused.
    mrn["value"] = "H-1"
    report = import_file(store, vault, _clemente_with(tmp_path, _cholesterol("c9", "2030-01-02T08:00:00Z", 250),
                                                      identifier=mrn), record_prefix="H")
    assert report.rejected == 1 and LOCAL_RECORD_SYSTEM in report.patients[0].reasons[0]


def test_a_record_stored_before_sources_were_kept_takes_the_system_and_provenance_of_its_next_import(node):
    store, vault = node
    import_file(store, vault, CLEMENTE, record_prefix="SYN")
    with store.session() as session:
        session.exec(delete(PatientSource))
        session.commit()
    report = import_file(store, vault, CLEMENTE, record_prefix="SYN")
    assert report.already_present == 1
    _, source, stored = _stored(store, vault, NUMBER)
    assert source.identifier_system == SYNTHEA_MRN_SYSTEM and stored["trestbps"]["source"] == CLEMENTE.name


def test_a_file_of_one_complete_heart_record_imports_as_train_instead_of_failing_the_split(node, tmp_path):
    """One patient per file is how EHRs export (a Synthea Bundle is one patient): FLamby's split cannot split one
    record, and used to fail the import with scikit-learn's message."""
    store, vault = node
    path = tmp_path / "one.csv"
    path.write_text("record_number,age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal,num\n"
                    "H-9,63,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n")
    report = import_file(store, vault, path, record_prefix="H")
    assert report.imported == 1 and report.cohorts == {"train": 1}


def test_the_hl7_cgm_guides_readings_keep_each_values_time_and_resource(node):
    store, vault = node
    report = import_file(store, vault, DATA / "cgm" / "cgm-ig-examples.json", record_prefix="CGM")
    (number,) = [p.record_number for p in report.patients if p.outcome == "imported"]
    patient, source, stored = _stored(store, vault, number)
    assert patient.kind == "diabetes" and source.identifier_system == "http://example.org"
    readings = stored["cgm_mgdl"]
    assert readings["values"] == 2 and readings["source"] == "cgm-ig-examples.json"
    assert (readings["first"], readings["last"]) == ("2024-05-02T10:15:00+00:00", "2024-05-02T10:30:00+00:00")
    assert "cgmSensorReadingMassPerVolumeExample" in readings["from"][0][1]
    assert "cgmSensorReadingMolesPerVolumeExample" in readings["from"][1][1]
