"""Issue 17's proof: the survival task, added as one package and one registration line, runs with the one command
(`twinledger study run --task breast-cancer-survival/v1`) through the real processes (anvil, the SuperLink, three
SuperNodes), consent from its data's consent.csv, and the independent audit finds no violation."""

from __future__ import annotations

import json

import pytest

from deploy.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]


def test_the_survival_study_runs_with_one_command_and_audits_clean(tmp_path):
    workdir, report_path = tmp_path / "run", tmp_path / "report.json"
    code = main(["study", "run", "--task", "breast-cancer-survival/v1", "--workdir", str(workdir),
                 "--report", str(report_path), "--rounds", "1", "--timeout-s", "800"])
    report = json.loads(report_path.read_text())
    assert code == 0 and report["audit"]["violations"] == 0
    assert report["study"]["task"] == "breast-cancer-survival/v1" and report["study"]["weighted_by"] == "events"
    assert report["study"]["metric"]["name"] == "c_index" and report["study"]["metric"]["decimals"] == 3
    (only,) = report["rounds"]
    assert set(only["used"]) == set(only["hospital_metrics"]) == {"north", "centre", "south"}
    assert 0.0 <= only["metrics"]["c_index"] <= 1.0 and only["metrics"]["c_index_error_bound"] > 0
    page = report_path.with_suffix(".html").read_text()
    assert "Concordance index" in page and "from counts by follow-up year and risk fifth" in page
