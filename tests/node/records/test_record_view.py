"""Where hospital IT looks at a record (node/console: GET /api/patients/{record number} and the record page): the
identifier system and each stored value's provenance, never the values; it-admin only, and logged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.node.console.test_node_console import Console

CLEMENTE = (Path(__file__).resolve().parents[2] / "data" / "fhir" / "synthea"
            / "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json")
NUMBER = "1484a42d-0eaf-4654-9cbf-6b050a5cd73b"


@pytest.fixture
def console(tmp_path) -> Console:
    console = Console(tmp_path / "node")
    answer = console.admin().post("/api/imports?filename=clemente.json", content=CLEMENTE.read_bytes(),
                                  headers={"Content-Type": "application/fhir+json"})
    assert answer.status_code == 201 and answer.json()["imported"] == 1, answer.text
    return console


def test_it_sees_a_synthea_records_identifier_system_and_provenance_but_no_value(console):
    answer = console.admin().get(f"/api/patients/{NUMBER}")
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert record["identifier_system"] == "http://hospital.smarthealthit.org" and record["kind"] == "heart-disease"
    pressure = record["provenance"]["trestbps"]
    assert pressure["code"] == "8480-6" and pressure["resource"] and pressure["source"] == "clemente.json"
    assert "value" not in str(record["provenance"]) and "clinical" not in record
    actions = console.admin().get("/api/actions").json()
    assert any(a["action"] == "records.view" and a["target"] == NUMBER for a in actions)


def test_viewers_and_strangers_cannot_read_provenance_and_an_unknown_number_is_404(console):
    assert console.viewer().get(f"/api/patients/{NUMBER}").status_code == 403
    assert console.api().get(f"/api/patients/{NUMBER}").status_code == 401
    answer = console.admin().get("/api/patients/nobody/../x")
    assert answer.status_code == 404 and "no patient" in answer.json()["detail"]


def test_the_record_page_lists_the_provenance(console):
    client = console.client()
    page = client.get("/login")
    form_token = re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)
    client.post("/login", data={"form_token": form_token, "token": console.admin_token})
    assert f'href="/patients/{NUMBER}"' in client.get("/patients").text
    page = client.get(f"/patients/{NUMBER}")
    assert page.status_code == 200 and "8480-6" in page.text and "http://hospital.smarthealthit.org" in page.text
    assert client.get("/patients/nobody").status_code == 404
