"""Patient records at rest and their import: encryption, FLamby's split, all-or-nothing imports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.records import RecordFileError
from node.records.heart_csv import import_heart_disease_csv
from node.store import Store
from node.vault import Vault, VaultError, create_key_file

DATA = Path(__file__).resolve().parents[3] / "deploy" / "data" / "heart-disease"


@pytest.fixture
def vault(tmp_path):
    create_key_file(tmp_path / "data.key")
    return Vault.open(tmp_path / "data.key")


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'node.db'}")


def test_key_file_is_owner_only_and_others_are_refused(tmp_path, vault):
    path = tmp_path / "data.key"
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(VaultError, match="readable by others"):
        Vault.open(path)


def test_records_are_sealed_and_bound_to_their_pseudonym(vault):
    sealed = vault.seal({"age": 63.0}, associated="0xaa")
    assert b"63" not in sealed
    assert vault.open_record(sealed, associated="0xaa") == {"age": 63.0}
    with pytest.raises(VaultError, match="cannot be decrypted"):
        vault.open_record(sealed, associated="0xbb")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(VaultError):
        vault.open_record(tampered, associated="0xaa")


@pytest.mark.parametrize(
    "hospital_file, train, test, incomplete",
    [
        ("processed.cleveland.data", 199, 104, 0),
        ("processed.hungarian.data", 172, 89, 33),
        ("processed.switzerland.data", 30, 16, 77),
        ("processed.va.data", 85, 45, 70),
    ],
)
def test_import_reproduces_flamby_split(store, vault, hospital_file, train, test, incomplete):
    report = import_heart_disease_csv(store, vault, DATA / hospital_file, record_prefix="H")
    assert report.cohorts == {k: v for k, v in {"train": train, "test": test, "incomplete": incomplete}.items() if v}
    pseudonyms = [p.pseudonym for p in store.patients()]
    assert len(set(pseudonyms)) == len(pseudonyms)
    assert all(len(p) == 66 for p in pseudonyms)


def test_reimport_adds_nothing(store, vault):
    import_heart_disease_csv(store, vault, DATA / "processed.va.data", record_prefix="VA")
    again = import_heart_disease_csv(store, vault, DATA / "processed.va.data", record_prefix="VA")
    assert again.imported == 0 and again.already_present == 200


def test_malformed_file_is_rejected_whole_with_line_numbers(tmp_path, store, vault):
    good = (DATA / "processed.cleveland.data").read_text().splitlines()
    bad = good[:3] + ["63,1,1,145,233,1,2,150,0,2.3,3,0,6"] + good[3:5] + ["63,1,9,145,abc,1,2,150,0,2.3,3,0,6,0"]
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(bad) + "\n")
    with pytest.raises(RecordFileError) as error:
        import_heart_disease_csv(store, vault, path, record_prefix="X")
    message = str(error.value)
    assert "line 4: 13 columns, expected 14" in message
    assert "line 7: cp = 9 is outside [1, 4]" in message
    assert "line 7: chol is 'abc', not a number" in message
    assert store.patients() == []


def test_csv_with_header_and_record_numbers(tmp_path, store, vault):
    path = tmp_path / "with-header.csv"
    rows = (DATA / "processed.cleveland.data").read_text().splitlines()[:20]
    header = "record_number,age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal,num"
    path.write_text(header + "\n" + "\n".join(f"MRN-{i},{row}" for i, row in enumerate(rows)) + "\n")
    report = import_heart_disease_csv(store, vault, path, record_prefix="X")
    assert report.imported == 20
    assert {p.record_number for p in store.patients()} == {f"MRN-{i}" for i in range(20)}


def test_empty_and_missing_files(tmp_path, store, vault):
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(RecordFileError, match="no records"):
        import_heart_disease_csv(store, vault, tmp_path / "empty.csv", record_prefix="X")
    with pytest.raises(RecordFileError, match="no such file"):
        import_heart_disease_csv(store, vault, tmp_path / "absent.csv", record_prefix="X")
