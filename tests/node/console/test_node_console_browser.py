"""The node console in headless Chromium, on a real chain (anvil), a real Flower SuperLink and a real node home:
a hospital IT person logs in, sees the node's health, uploads a FHIR Bundle (a bad one first), sees the patients,
issues an enrolment code and looks at the privacy budget; the pages work on a phone and from the keyboard."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from contracts import ledger as lg
from deploy import processes
from deploy.consortium import Consortium
from federation.commitment import pseudonym_commitment
from federation.ids import Pseudonym
from node.console.app import create_app
from node.console.cli import create_console_token
from node.console.settings import ConsoleSettings
from node.privacy import PrivacyBudget
from node.records.heart_fhir_export import export_csv_as_bundle
from node.store import RoundUsage, Store
from tests.conftest import save_screenshot

pytestmark = [pytest.mark.browser]

DATA = Path(__file__).resolve().parents[3] / "deploy" / "data" / "heart-disease"


@pytest.fixture
def site(anvil_url, artifacts, tmp_path):
    """A node home on anvil (hospital registered, one study accepted), a SuperLink, and the console on a free port."""
    consortium = Consortium.deploy(lg.connect(anvil_url), rpc_url=anvil_url, deployment_file=tmp_path / "deployment.json",
                                   artifacts=artifacts, ether=10)
    hospital = consortium.add_node("hungary", tmp_path / "node")
    study = consortium.propose_study(epsilon_budget=3.0, delta_exponent=5, rounds=5)
    hospital.accept(study)
    node = hospital.settings
    # Two rounds this node trained, accounted as node/service.py does: the noise planned to fit the study's five
    # rounds in the budget, the steps recorded, the pseudonyms used in the usage log.
    store, study_hex = Store(node.resolved_database_url), str(study)
    budget = PrivacyBudget(store, study_id=study_hex, epsilon_budget=3.0, delta=1e-5)
    used = sorted(Pseudonym.new() for _ in range(12))
    for round_number in (1, 2):
        plan = budget.plan(sample_rate=0.25, steps_per_round=16, rounds_left=5 - round_number + 1)
        budget.record(round_number, [(plan.noise_multiplier, 0.25, 16)])
        store.record_usage(RoundUsage(study_id=study_hex, round=round_number, phase="train",
                                      block=consortium.w3.eth.block_number, commitment=str(pseudonym_commitment(used)),
                                      pseudonyms=json.dumps([str(p) for p in used])))

    superlink_port = processes.free_port()
    superlink = processes.start_superlink(port=superlink_port, state_dir=tmp_path / "superlink",
                                          flwr_home=tmp_path / "flwr")
    token = create_console_token(node.home, name="hana", role="it-admin")
    settings = ConsoleSettings.load(node.home, superlink=f"127.0.0.1:{superlink_port}")
    port = processes.free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the console did not start"
    # The first 24 Hungarian patients (a short list keeps the screenshot small), as a FHIR Bundle.
    first = tmp_path / "hungary-24.csv"
    first.write_text("\n".join((DATA / "processed.hungarian.data").read_text().splitlines()[:24]) + "\n")
    bundle = export_csv_as_bundle(first, tmp_path / "upload" / "hungary-patients.json", record_prefix="HUN")
    bad = json.loads(bundle.read_text())
    bad["entry"][2]["resource"]["valueQuantity"]["value"] = 420  # entry 3: a systolic pressure out of range
    bad_file = tmp_path / "upload" / "hungary-bad.json"
    bad_file.write_text(json.dumps(bad))
    yield {"url": f"http://localhost:{port}", "token": token, "bundle": bundle, "bad": bad_file, "store": store,
           "superlink": f"127.0.0.1:{superlink_port}", "study": study_hex}
    server.should_exit = True
    thread.join(timeout=10)
    superlink.stop()


def budget_spent(site) -> float:
    return PrivacyBudget(site["store"], study_id=site["study"], epsilon_budget=3.0, delta=1e-5).spent()


def test_hospital_it_logs_in_imports_a_bundle_issues_a_code_and_sees_the_budget(site, page):
    url = site["url"]
    page.goto(url + "/")
    assert page.url.endswith("/login")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    save_screenshot(page, "node-console-login")
    page.get_by_label("Console token").fill(site["token"])
    page.get_by_label("Console token").press("Enter")  # the keyboard alone submits the form

    page.wait_for_url(url + "/")
    assert page.get_by_role("heading", name="Node health").is_visible()
    assert page.get_by_text("All checks passed").is_visible()
    health = page.locator("table").inner_text()
    assert re.search(r"latest block \d+", health) and f"{site['superlink']} accepts TCP connections" in health
    assert "Last round" in page.content() and page.get_by_text("2 (train)").is_visible()
    save_screenshot(page, "node-console-health")

    page.get_by_role("link", name="Patients").click()
    assert page.get_by_role("heading", name="Patients (0)").is_visible()
    page.get_by_label("File to import").set_input_files(str(site["bad"]))
    page.get_by_role("button", name="Import the file").click()
    alert = page.locator("#import-result")
    alert.get_by_text("nothing imported").wait_for()
    assert "entry 3 (Observation" in alert.inner_text() and "420 mm[Hg] is outside [0, 300] mm[Hg]" in alert.inner_text()
    assert site["store"].patients() == []
    save_screenshot(page, "node-console-import-error")

    page.get_by_label("File to import").set_input_files(str(site["bundle"]))
    page.get_by_role("button", name="Import the file").click()
    page.wait_for_url(url + "/patients?imported=1")
    notice = page.get_by_role("status").inner_text()
    assert "Imported hungary-patients.json: fhir: 24 imported" in notice
    assert page.get_by_role("heading", name="Patients (24)").is_visible()
    assert page.get_by_role("cell", name="HUN-00001", exact=True).is_visible()
    save_screenshot(page, "node-console-patients")

    page.get_by_role("link", name="Enrolment codes").click()
    page.get_by_label("Patient's record number").fill("HUN-00007")
    page.get_by_role("button", name="Issue an enrolment code").click()
    code = page.locator("#issued-code").inner_text()
    assert re.fullmatch(r"([A-Z2-9]{5}-){3}[A-Z2-9]{5}", code)
    assert page.get_by_role("cell", name="HUN-00007").is_visible()
    save_screenshot(page, "node-console-enrolment")

    page.get_by_role("link", name="Studies and budget").click()
    assert page.get_by_text("Accepted by this hospital").is_visible()
    label = page.locator("label[for=budget-1]").inner_text()
    spent = re.search(r"epsilon (\d\.\d{3}) of 3 \((\d+) %\)", label)
    assert spent and 0 < float(spent.group(1)) < 3.0  # two of five rounds: spent, within the budget
    assert float(spent.group(1)) == pytest.approx(budget_spent(site), abs=1e-3)
    assert page.get_by_text("2 trained of 5 allowed, 0 evaluated").is_visible()
    save_screenshot(page, "node-console-budget")

    page.get_by_role("link", name="Action log").click()
    log = page.locator("table").inner_text()
    assert "hana (it-admin)" in log and "records.import" in log and "enrolment-code.issue" in log and "refused" in log

    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    for path in ("/", "/patients", "/studies"):
        page.goto(url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways on a phone ({overflow} px)"
    page.goto(url + "/")
    save_screenshot(page, "node-console-phone")
