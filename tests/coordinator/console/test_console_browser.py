"""The operator console in headless Chromium against the real stack: anvil, the console as a server
process, a Flower SuperLink and two hospital SuperNodes. An operator logs in with a token, creates a
study, the hospitals accept it and their patients consent, the operator launches a 2-round run, watches
it live until it finishes, downloads the report and reads the activity log."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import requests

from contracts import ledger as lg
from coordinator.console.cli import create_token
from coordinator.settings import CoordinatorSettings
from deploy import processes
from deploy.consortium import Consortium, chain_url
from federation.ids import StudyId
from node import admin as node_admin
from tests.conftest import save_screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(600)]
ROUND_TIMEOUT_MS = 240_000  # a round takes about 10 s; much longer only on a machine shared with other jobs
DATA = Path(__file__).resolve().parents[3] / "deploy" / "data" / "heart-disease"
HOSPITALS = {"cleveland": "processed.cleveland.data", "hungary": "processed.hungarian.data"}


def poll_until(page, predicate: str, *, timeout_s: float = 15) -> None:
    """page.wait_for_function evaluates its predicate with eval, which the pages' CSP forbids; this does not."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(predicate):
        assert time.monotonic() < deadline, f"not true within {timeout_s:g} s: {predicate}"
        time.sleep(0.2)


class Federation:
    """The contracts on a chain, a coordinator home with the operator's key, two hospital nodes with
    their records and enrolled patients (deploy/consortium.py); the SuperLink, the SuperNodes and the
    console as processes."""

    def __init__(self, workdir: Path, rpc_url: str):
        self.workdir = workdir
        self.services: list[processes.Service] = []
        self.rpc_url = rpc_url
        self.home = workdir / "coordinator"
        deployment_file = workdir / "chain" / "deployment.json"
        self.consortium = Consortium.deploy(lg.connect(rpc_url), rpc_url=rpc_url, deployment_file=deployment_file,
                                            operator_key_file=self.home / "keys" / "operator.key")
        self.w3, self.deployment = self.consortium.w3, self.consortium.deployment
        CoordinatorSettings(home=self.home, rpc_url=self.rpc_url, deployment_file=deployment_file,
                            min_nodes=len(HOSPITALS), round_timeout_s=300, wait_for_nodes_s=60,
                            confirmations=0).save()  # anvil: the consents just relayed are in the last blocks
        self.consortium.add_coordinator(key_file=self.home / "keys" / "coordinator.key")
        for name, filename in HOSPITALS.items():
            self.consortium.add_node(name, workdir / "nodes" / name, records=[DATA / filename]).enrol()
        self.nodes = {name: node.settings for name, node in self.consortium.nodes.items()}
        self.token = create_token(self.home, name="olivia", role="operator")

    def start_flower(self) -> str:
        flwr_home = self.workdir / "flower"
        port = processes.free_port()
        self.services.append(processes.start_superlink(port=port, state_dir=self.workdir / "superlink", flwr_home=flwr_home))
        for name, settings in self.nodes.items():
            self.services.append(processes.start_supernode(
                name=name, superlink_port=port, port=processes.free_port(), node_home=settings.home,
                flwr_home=flwr_home, log_path=self.workdir / "logs" / f"supernode-{name}.log"))
        return f"127.0.0.1:{port}"

    def start_console(self, superlink: str) -> str:
        port = processes.free_port()
        env = {**processes.flower_env(self.workdir / "flower"), "TWINLEDGER_CONSOLE_SUPERLINK": superlink}
        service = processes.start(
            "console", [sys.executable, "-c", "import sys; from coordinator.console.cli import serve; "
                        f"serve(sys.argv[1], port={port}, insecure_http=True)", str(self.home)],
            log_path=self.workdir / "logs" / "console.log", env=env)
        self.services.append(service)
        url = f"http://127.0.0.1:{port}"
        processes.wait_until(service, lambda: requests.get(url + "/login", timeout=2).ok, timeout_s=60,
                             what=f"HTTP on {url}")
        return url

    def hospitals_accept_and_patients_consent(self, study_hex: str) -> None:
        study_id = StudyId.parse(study_hex)
        for node in self.consortium.nodes.values():
            node.accept(study_id)
            node.consent(study_id)  # every enrolled patient, for a year

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("console-e2e")
    with chain_url(None, log_path=workdir / "logs" / "anvil.log") as rpc_url:  # an anvil of its own
        fed = Federation(workdir, rpc_url)
        try:
            yield fed
        finally:
            fed.stop()


def test_an_operator_runs_a_study_from_the_console_and_watches_it_finish(federation, page, tmp_path):
    superlink = federation.start_flower()
    url = federation.start_console(superlink)

    page.goto(url + "/")
    assert page.url.endswith("/login")
    save_screenshot(page, "console-login")
    page.get_by_label("Access token").fill("tl_not-the-token")
    page.get_by_role("button", name="Log in").click()
    assert "not valid" in page.get_by_role("alert").inner_text()
    page.get_by_label("Access token").fill(federation.token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(url + "/studies")
    cookie = next(c for c in page.context.cookies() if c["name"] == "twinledger_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # The operator proposes the study on chain.
    page.get_by_label("Purpose").select_option("HRESCH")
    page.get_by_label("Federated task").select_option("heart-disease/v1")
    page.get_by_label("Privacy budget ε per hospital").fill("4")
    page.get_by_label("Rounds allowed").fill("3")
    page.get_by_label("ecg").check()
    page.get_by_label("demographics").check()
    page.get_by_role("button", name="Propose the study on chain").click()
    notice = page.get_by_role("status").inner_text()
    study_hex = notice.split()[1]
    assert study_hex.startswith("0x") and len(study_hex) == 66, notice
    terms = lg.Ledger(federation.w3, federation.deployment).study(StudyId.parse(study_hex))
    assert (terms.purpose, terms.task_id, terms.epsilon_budget, terms.rounds) == ("HRESCH", "heart-disease/v1", 4.0, 3)

    # The hospitals accept it from their nodes; their patients consent. The studies page shows who accepted.
    federation.hospitals_accept_and_patients_consent(study_hex)
    page.reload()
    row = page.locator("tr", has_text=study_hex[:12])
    for name in HOSPITALS:
        address = node_admin.hospital_address(federation.nodes[name])
        assert address[:10] in row.inner_text()
    save_screenshot(page, "console-studies")

    # Launch a 2-round run and watch it live.
    row.get_by_role("link", name="Launch a run").click()
    page.get_by_label("Run name").fill("first-run")
    page.get_by_label("Rounds").fill("2")
    page.get_by_label("Wait for at least this many hospitals").fill("2")
    page.get_by_text("Training options").click()
    page.get_by_label("Local epochs per round").fill("1")
    page.get_by_role("button", name="Launch the run").click()
    page.wait_for_url(url + "/runs/first-run")
    page.locator("#rounds-done", has_text="1").wait_for(timeout=ROUND_TIMEOUT_MS)
    page.locator("#chart-epsilon svg").wait_for()
    page.locator("#chart-epsilon .legend", has_text="cleveland").wait_for()
    save_screenshot(page, "console-run-live")
    page.locator("#status", has_text="finished").wait_for(timeout=ROUND_TIMEOUT_MS)
    assert page.locator("#rounds-done").inner_text() == "2"
    assert page.locator("#rounds tr").count() == 2
    assert page.locator("#chart-metrics circle").count() >= 2
    assert "hungary" in page.locator("#hospitals").inner_text()
    page.locator("#model-link").wait_for(state="visible", timeout=20_000)
    assert page.locator("#stop-form").is_hidden()
    save_screenshot(page, "console-run-finished")

    # Downloads: the report (JSON), then the model.
    with page.expect_download() as download:
        page.get_by_role("link", name="Report (JSON)").click()
    saved = tmp_path / "report.json"
    download.value.save_as(saved)
    report = json.loads(saved.read_text())
    assert report["status"] == "finished" and [r["round"] for r in report["rounds"]] == [1, 2]
    assert all(r["used"].get(name, 0) > 0 for r in report["rounds"] for name in HOSPITALS)
    with page.expect_download() as download:
        page.get_by_role("link", name="Model weights (model.pt)").click()
    assert download.value.suggested_filename == "first-run-model.pt"
    page.get_by_role("link", name="Report (page with plots)").click()
    page.get_by_role("heading", name="Rounds").wait_for()
    poll_until(page, "() => document.images.length > 0 && [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    page.go_back()

    # A second run waits for a third hospital that never comes: the operator stops it (flwr stop on the SuperLink).
    page.get_by_role("link", name="Runs").click()
    page.get_by_label("Run name").fill("waiting-run")
    page.get_by_label("Rounds").fill("1")
    page.get_by_label("Wait for at least this many hospitals").fill("3")
    page.get_by_role("button", name="Launch the run").click()
    page.wait_for_url(url + "/runs/waiting-run")
    poll_until(page, "() => /^[0-9]+$/.test(document.getElementById('flwr-run').textContent)", timeout_s=60)
    page.reload()  # the page as the operator finds it once Flower has taken the run
    page.get_by_role("button", name="Stop the run").click()
    page.locator("#status", has_text="stopped").wait_for()
    assert "stopped by olivia" in page.locator("#message").inner_text()

    # The phone-sized run page and the activity log.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(url + "/runs/first-run")
    page.locator("#status", has_text="finished").wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    save_screenshot(page, "console-run-phone")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("link", name="Activity").click()
    log = page.locator("tbody").inner_text()
    for action in ("login", "study.create", "run.launch", "run.stop", "download"):
        assert action in log
    assert "olivia" in log and "anonymous" in log
    save_screenshot(page, "console-activity")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
