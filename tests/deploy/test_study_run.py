"""`twinledger study run --task ID --data DIR` (issue 17): the demo's code path for any task; which files are the
hospitals and whose consent is recorded, failing closed."""

from __future__ import annotations

import pytest

from deploy.cli import build_parser, main
from federation.tasks import TASKS
from federation.tasks.data_path import hospital_files, study_consent


def test_study_run_and_the_demo_are_one_command():
    parser = build_parser()
    run = parser.parse_args(["study", "run", "--task", "glucose-forecast/v1", "--data", "d", "--rounds", "2"])
    demo = parser.parse_args(["demo"])
    assert run.func is demo.func
    assert (run.task, run.data, run.rounds, run.serve) == ("glucose-forecast/v1", "d", 2, "never")
    assert (demo.task, demo.data, demo.consent) == ("heart-disease/v1", None, None)


def test_each_file_is_a_hospital_and_consent_comes_from_the_consent_file(tmp_path):
    for name in ("north", "south"):
        (tmp_path / f"{name}.csv").write_text("x\n")
    (tmp_path / "README.md").write_text("about the data\n")
    (tmp_path / "consent.csv").write_text("hospital,record_number,consent\nnorth,N1,yes\nnorth,N2,no\nsouth,S1,1\n")
    files = hospital_files(tmp_path)
    assert sorted(files) == ["north", "south"]
    consent = study_consent(files)
    assert consent == {("north", "N1"): True, ("north", "N2"): False, ("south", "S1"): True}


def test_data_without_consent_is_refused_not_assumed(tmp_path):
    (tmp_path / "north.csv").write_text("x\n")
    with pytest.raises(ValueError, match="no consent given"):
        study_consent(hospital_files(tmp_path))
    (tmp_path / "consent.csv").write_text("patient,agrees\nN1,yes\n")
    with pytest.raises(ValueError, match="must name hospital, record_number and consent"):
        study_consent(hospital_files(tmp_path))


def test_a_task_without_demo_data_needs_data(tmp_path, capsys):
    assert TASKS["glucose-forecast/v1"].demo_data is None
    code = main(["study", "run", "--task", "glucose-forecast/v1", "--workdir", str(tmp_path / "w")])
    assert code == 2
    assert "ships no demo data: give --data DIR" in capsys.readouterr().err


def test_an_unknown_task_is_refused_naming_the_known_ones(tmp_path, capsys):
    assert main(["study", "run", "--task", "oncology/v9", "--workdir", str(tmp_path / "w")]) == 2
    assert "unknown federated task 'oncology/v9'" in capsys.readouterr().err
