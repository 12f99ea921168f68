"""The run report renders to an HTML page with three valid PNG plots, escaping report strings."""
import re

from coordinator.report_page import write_report_page


def _report() -> dict:
    hospitals = ["cleveland", "hungary"]
    return {
        "study": {"id": "0x12ab", "purpose": "HRESCH", "task": "heart-disease/v1",
                  "epsilon_budget": 3.0, "delta": 1e-05, "rounds": 3},
        "hospitals": [{"name": h, "patients": 300, "consented": 270, "epsilon_spent": 2.5,
                       "epsilon_budget": 3.0} for h in hospitals],
        "rounds": [
            {"round": 1, "block": 100, "accuracy": 0.70, "loss": 0.6,
             "used": {"cleveland": 180, "hungary": 150}, "epsilon": {"cleveland": 0.8, "hungary": 0.8}},
            {"round": 2, "block": 120, "accuracy": None, "loss": None,
             "used": {"cleveland": 179, "hungary": 150}, "epsilon": {"cleveland": 1.6, "hungary": 1.6},
             "errors": {"hungary": "evaluation failed at <b>x</b>"}},
            {"round": 3, "block": 140, "accuracy": 0.76, "loss": 0.5,
             "used": {"cleveland": 179, "hungary": 150}, "epsilon": {"cleveland": 2.5, "hungary": 2.5}},
        ],
        "revoked": [{"pseudonym": "0x" + "ab" * 32, "block": 110, "hospital": "cleveland"}],
        "audit": {"violations": 0, "checked": 1000, "commitment_mismatches": 0},
        "baseline": {"constant_predictor_accuracy": 0.55},
        "generated_at": "2026-11-23T20:00:00Z",
    }


def test_report_page(tmp_path):
    json_path = tmp_path / "run-1.json"
    out = write_report_page(_report(), json_path)
    assert out == tmp_path / "run-1.html" and out.exists()
    page = out.read_text(encoding="utf-8")
    assert '<html lang="en">' in page and "<title>" in page
    assert "cleveland" in page and "hungary" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "0x" + "ab" * 5 + "…" in page and "ab" * 32 not in page
    pngs = re.findall(r'<img src="([^"]+\.png)"', page)
    assert len(pngs) == 3
    for rel in pngs:
        png = tmp_path / rel
        assert png.exists() and png.read_bytes().startswith(b"\x89PNG")


def test_minimal_report(tmp_path):
    """Missing optional keys (errors, revoked, baseline, audit) do not crash the page."""
    report = {"study": {}, "hospitals": [{"name": "va"}], "rounds": [{"round": 1, "accuracy": None}]}
    page = write_report_page(report, tmp_path / "r.json").read_text(encoding="utf-8")
    assert "va" in page and "No consent was revoked" in page


def test_a_saved_run_report_reads_back_typed_and_renders(tmp_path):
    """The report page takes the typed RunReport as it is loaded from report.json, the demo's keys kept."""
    from coordinator.report import RunReport

    json_path = tmp_path / "report.json"
    RunReport.model_validate(_report()).save(json_path)
    report = RunReport.load(json_path)
    assert report.rounds[0].value("accuracy") == 0.70 and report.rounds[1].value("accuracy") is None
    assert report.extra("audit") == {"violations": 0, "checked": 1000, "commitment_mismatches": 0}
    assert report.as_dict()["revoked"] == _report()["revoked"]
    page = write_report_page(report, json_path).read_text(encoding="utf-8")
    assert "Audit passed" in page and "70.0%" in page
