"""The therapy suggestion on the console's Twins page: current and proposed plans side by side, with bands,
labelled as decision support for a clinician, each view logged."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from node import admin
from node.console.app import create_app
from node.console.cli import create_console_token
from node.console.settings import ConsoleSettings
from node.twins.cohort import simulate_patients, write_records

PATIENT = "T1D-child003"


@pytest.mark.slow  # calibrates a twin and searches its therapy: 30-90 s
def test_the_therapy_page_shows_both_plans_with_bands(tmp_path):
    home = tmp_path / "node"
    settings = admin.init_node(home, hospital="cleveland", rpc_url="http://127.0.0.1:9", deployment_file=None)
    viewer = create_console_token(home, name="vic", role="viewer")
    admin_token = create_console_token(home, name="ada", role="it-admin")
    admin.import_records(settings, write_records(simulate_patients(["child#003"], days=2, seed=3), tmp_path / "t.csv"),
                         cohort="train")
    client = TestClient(create_app(ConsoleSettings.load(home)), base_url="https://testserver")
    assert client.get(f"/twins/diabetes/{PATIENT}/therapy", follow_redirects=False).headers["location"] == "/login"
    form_token = re.search(r'name="form_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"form_token": form_token, "token": viewer})
    twin_page = client.get(f"/twins/diabetes/{PATIENT}")
    assert twin_page.status_code == 200 and f'href="/twins/diabetes/{PATIENT}/therapy"' in twin_page.text
    page = client.get(f"/twins/diabetes/{PATIENT}/therapy")
    assert page.status_code == 200, page.text
    text = page.text
    assert "Decision support for a clinician" in text and "not a prescription" in text
    assert "<th scope=\"col\">Current</th><th scope=\"col\">Proposed</th>" in text
    assert "Basal rate (U/h)" in text and "Carb ratio (g/U)" in text and "Correction factor (mg/dL/U)" in text
    assert re.search(r"Time in range 70-180 \(%\)</th>\s*<td>[\d.]+ \([\d.]+-[\d.]+\)</td>", text)  # median (band)
    assert re.search(r'id="therapy-recommendation"><strong>(Change|No change recommended): ', text)  # and why
    missing = client.get("/twins/diabetes/nobody/therapy")
    assert missing.status_code == 404 and "no diabetes twin" in missing.text
    api = TestClient(create_app(ConsoleSettings.load(home)), base_url="https://testserver")
    api.headers["Authorization"] = f"Bearer {admin_token}"
    logged = [(a["actor"], a["action"], a["outcome"]) for a in api.get("/api/actions").json()]
    assert ("vic", "twins.page.therapy", "ok") in logged and ("vic", "twins.page.therapy", "refused") in logged
