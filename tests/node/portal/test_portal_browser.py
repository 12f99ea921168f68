"""The patient portal in headless Chromium (Debian's), served by uvicorn on a free port, on anvil over JSON-RPC.

A patient enrols with a code from staff, grants, sees the grant recorded (and the test asks the chain itself),
revokes, sees that recorded too; a wallet-owned key signs in an injected EIP-1193 wallet; a phone-sized pass;
another patient's data is never visible. Screenshots of the main pages go to docs/screenshots/portal-*.png.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from eth_account import Account
from fastapi.testclient import TestClient
from sqlmodel import select

from contracts import ledger as lg
from deploy import processes
from deploy.consortium import Consortium
from federation.commitment import combined_commitment, pseudonym_commitment
from federation.ids import Pseudonym, StudyId, hex0x
from node.portal.app import create_app
from node.portal.models import PortalAccount
from node.portal.settings import PortalSettings
from node.store import RoundUsage, Store
from tests.conftest import save_screenshot

pytestmark = [pytest.mark.browser]

DATA = Path(__file__).resolve().parents[3] / "deploy" / "data" / "heart-disease"
PASSWORDS = {"alice": "correct horse battery", "walt": "wallet walker pw", "carol": "carol's long password",
             "dave": "dave's long password"}


@dataclass
class Served:
    url: str
    app: object
    settings: PortalSettings
    hospital: lg.Ledger
    coordinator: lg.Ledger
    study_id: StudyId
    store: Store
    staff_token: str

    @property
    def study(self) -> str:
        return str(self.study_id)

    def api(self) -> TestClient:
        """The same application in-process, for what staff and other patients do around the browser."""
        return TestClient(self.app, base_url="https://testserver")

    def code_for(self, record_number: str) -> str:
        answer = self.api().post("/api/staff/enrolment-codes", json={"record_number": record_number},
                                 headers={"Authorization": f"Bearer {self.staff_token}"})
        assert answer.status_code == 201, answer.text
        return answer.json()["code"]

    def record(self, index: int) -> str:
        return self.store.patients()[index].record_number

    def pseudonym_of(self, username: str) -> str:
        with self.store.session() as session:
            return session.exec(select(PortalAccount).where(PortalAccount.username == username)).one().pseudonym


@pytest.fixture(scope="module")
def served(artifacts, anvil_url, tmp_path_factory):
    """A hospital node's home on anvil, with the portal it serves: the real hospital key, the real files."""
    work = tmp_path_factory.mktemp("portal-browser")
    consortium = Consortium.deploy(lg.connect(anvil_url), rpc_url=anvil_url, deployment_file=work / "deployment.json",
                                   artifacts=artifacts, ether=10)
    coordinator = consortium.add_coordinator()
    records = work / "cleveland.csv"
    records.write_text("\n".join((DATA / "processed.cleveland.data").read_text().splitlines()[:6]) + "\n")
    node = consortium.add_node("Cleveland Clinic", work / "cleveland", records=[records])
    hospital = node.ledger
    other = consortium.add_hospital(node_id=b"\x02" * 32)
    study = consortium.propose_study(epsilon_budget=3.0, delta_exponent=5, rounds=5,
                                     ends_at=int(time.time()) + 180 * 86400)
    node.accept(study)
    other.accept_study(study)
    # The page shows "sent" at once and follows the change until the chain records it (no server-side wait).
    settings = PortalSettings.load(node.settings.home).replace(page_relay_wait_s=0.0,
                                                               hospital_names={other.address.lower(): "Hungarian Institute of Cardiology"})
    from node.portal.accounts import create_staff_token

    staff_token = create_staff_token(settings)
    app = create_app(settings)  # opens the node's own ledger: node.toml, deployment.json, keys/hospital.key
    port = processes.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield Served(f"http://localhost:{port}", app, settings, hospital, coordinator, study,
                 Store(node.settings.resolved_database_url), staff_token)
    server.should_exit = True
    thread.join(timeout=10)
    app.state.portal.relayer.shutdown()


def _enrol(page, served: Served, username: str, record_index: int, *, wallet: bool = False) -> None:
    code = served.code_for(served.record(record_index))
    page.goto(served.url + "/enrol")
    page.get_by_label("Enrolment code").fill(code)
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORDS[username])
    page.get_by_label("Password again").fill(PASSWORDS[username])
    if wallet:
        page.get_by_label("I use my own wallet").check()
        page.get_by_role("button", name="Fill in from my wallet").click()
        page.wait_for_function("document.getElementById('wallet-address').value.length === 42")
    return code


def _log_in(page, served: Served, username: str) -> None:
    page.goto(served.url + "/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORDS[username])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/studies")


def _change_id(page) -> str:
    """The change the page shows now (none: "0"), so that waiting for the next one cannot see this one."""
    return page.locator("#change").get_attribute("data-change") if page.locator("#change").count() else "0"


def _recorded_block(page, *, after: str) -> int:
    page.wait_for_selector(f'#change[data-status="recorded"]:not([data-change="{after}"])', timeout=20_000)
    return int(page.locator("#recorded-block").inner_text())


def test_a_patient_enrols_grants_sees_it_on_chain_and_withdraws(page, served):
    page.goto(served.url + "/")
    assert page.locator("html").get_attribute("lang") == "en"
    # Keyboard: the first Tab reaches the skip link, which is visible when focused and leads to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    save_screenshot(page, "portal-login")

    page.get_by_role("link", name="Open your account with the code the hospital gave you").click()
    _enrol(page, served, "alice", 0)
    save_screenshot(page, "portal-enrol")
    page.get_by_role("button", name="Open my account").click()
    assert "Your account is open" in page.get_by_role("status").inner_text()

    _log_in(page, served, "alice")
    card = page.get_by_role("region", name="For health research")
    assert "you do not agree" in card.inner_text() and "2 hospitals take part" in card.inner_text()
    save_screenshot(page, "portal-studies")

    card.get_by_role("link").click()
    body = page.locator("main").inner_text()
    for plain in ("Health research", "Predicting coronary artery disease", "cholesterol", "Cleveland Clinic",
                  "Hungarian Institute of Cardiology", "at most 5 training rounds", "Epsilon 3.0"):
        assert plain in body, plain
    page.get_by_label("Your password, to sign your consent").fill(PASSWORDS["alice"])
    page.get_by_role("button", name="I agree that my data is used").click()
    block = _recorded_block(page, after="0")
    assert "Your consent is recorded on the ledger at block" in page.locator("#change").inner_text()
    assert "You agree" in page.locator("main").inner_text()
    pseudonym = Pseudonym.parse(served.pseudonym_of("alice"))
    assert served.hospital.has_consent(pseudonym, served.study_id, block=block)  # the chain itself
    assert not served.hospital.has_consent(pseudonym, served.study_id, block=block - 1)

    # A round uses Alice's data, as the node would record it, and the coordinator anchors it on chain.
    pinned = served.hospital.block_number()
    commitment = pseudonym_commitment([pseudonym])
    for phase in ("train", "evaluate"):
        served.store.record_usage(RoundUsage(study_id=served.study, round=1, phase=phase, block=pinned,
                                             pseudonyms=json.dumps([str(pseudonym)]),
                                             commitment=str(commitment)))
    served.coordinator.anchor_round(served.study_id, 1, pinned_block=pinned, model_hash=b"\x05" * 32,
                                    commitments={served.hospital.address: combined_commitment(commitment, commitment)})
    page.reload()
    rows = page.get_by_role("region", name="Training rounds that used your data").inner_text()
    assert str(pinned) in rows and "train" in rows
    save_screenshot(page, "portal-study-recorded")
    page.get_by_role("link", name="Verify round 1").click()
    assert "Checked:" in page.get_by_role("status").inner_text()
    assert served.hospital.consortium.address in page.locator("main").inner_text()
    save_screenshot(page, "portal-round")

    page.go_back()
    before = _change_id(page)
    page.get_by_label("Your password, to sign the withdrawal").fill(PASSWORDS["alice"])
    page.get_by_role("button", name="Withdraw my consent").click()
    revoked_at = _recorded_block(page, after=before)
    assert revoked_at > block
    text = page.locator("#change").inner_text()
    assert "Your withdrawal is recorded on the ledger" in text and "From the next training round on" in text
    assert not served.hospital.has_consent(pseudonym, served.study_id, block=revoked_at)
    # The history is read from the chain's consent events when the page renders; once in the full suite (a shared
    # anvil under load) the first render after "recorded" did not list the withdrawal yet: the patient's next look does.
    for _ in range(10):
        history = page.get_by_role("region", name="History of your choices").inner_text()
        if str(revoked_at) in history:
            break
        page.wait_for_timeout(1000)
        page.reload()
    assert str(block) in history and str(revoked_at) in history


def test_a_wallet_owned_key_signs_in_the_patients_wallet(browser, served):
    wallet = Account.create()
    asked: list[dict] = []

    def sign(address: str, typed_json: str) -> str:
        # What a wallet does: show the typed data, sign it with the key only it holds.
        assert address.lower() == wallet.address.lower()
        typed = json.loads(typed_json)
        asked.append(typed)
        return hex0x(Account.sign_typed_data(wallet.key, full_message=typed).signature)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.expose_function("testWalletSign", sign)
    page.add_init_script("""
        window.ethereum = {
          async request({ method, params }) {
            if (method === "eth_requestAccounts" || method === "eth_accounts") { return [%s]; }
            if (method === "eth_signTypedData_v4") { return await window.testWalletSign(params[0], params[1]); }
            throw new Error("this test wallet does not do " + method);
          },
        };
    """ % json.dumps(wallet.address))
    try:
        page.goto(served.url + "/enrol")
        _enrol(page, served, "walt", 1, wallet=True)
        assert page.get_by_label("Your wallet's address").input_value() == wallet.address
        page.get_by_role("button", name="Open my account").click()
        assert "your wallet's address is recorded" in page.get_by_role("status").inner_text()
        pseudonym = Pseudonym.parse(served.pseudonym_of("walt"))
        assert served.hospital.consent.functions.patientOf(pseudonym).call()[0] == wallet.address
        with served.store.session() as session:
            account = session.exec(select(PortalAccount).where(PortalAccount.username == "walt")).one()
        assert account.key_custody == "wallet" and account.sealed_key == b""  # nothing the hospital could sign with

        _log_in(page, served, "walt")
        page.get_by_role("link", name="Details, history and your choice").click()
        assert page.get_by_label("Your password, to sign your consent").count() == 0
        page.get_by_role("button", name="Agree: sign with my wallet").click()
        block = _recorded_block(page, after="0")
        assert len(asked) == 1 and asked[0]["primaryType"] == "Grant"
        assert asked[0]["domain"]["verifyingContract"] == served.hospital.deployment.consent_registry
        assert asked[0]["message"]["pseudonym"] == str(pseudonym)
        assert served.hospital.has_consent(pseudonym, served.study_id, block=block)

        before = _change_id(page)
        page.get_by_role("button", name="Withdraw: sign with my wallet").click()
        revoked_at = _recorded_block(page, after=before)
        assert asked[-1]["primaryType"] == "Revoke" and revoked_at > block
        assert not served.hospital.has_consent(pseudonym, served.study_id, block=revoked_at)
        assert "From the next training round on" in page.locator("#change").inner_text()

        # The withdrawal door, logged out (as on a browser that cannot log in): the password gives the wallet
        # what to sign, and the signature goes to the ledger without a session.
        page.context.clear_cookies()
        page.goto(served.url + "/withdraw")
        page.get_by_label("User name").fill("walt")
        page.get_by_label("Password").fill(PASSWORDS["walt"])
        page.get_by_role("button", name="Withdraw", exact=True).click()
        page.get_by_role("button", name="Withdraw: sign with my wallet").click()
        page.locator("#wallet-status", has_text="Your withdrawal is").wait_for()
        assert asked[-1]["primaryType"] == "Revoke" and len(asked) == 3
    finally:
        context.close()


def test_on_a_phone_and_never_another_patients_data(browser, served):
    # Dave, another patient, agrees through the API and is used in round 2.
    api = served.api()
    assert api.post("/api/enrolment", json={"code": served.code_for(served.record(2)), "username": "dave",
                                            "password": PASSWORDS["dave"]}).status_code == 201
    login = api.post("/api/session", json={"username": "dave", "password": PASSWORDS["dave"]})
    csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
    daves = api.post(f"/api/studies/{served.study}/grant", json={"password": PASSWORDS["dave"]}, headers=csrf).json()
    dave = served.pseudonym_of("dave")
    pinned = served.hospital.block_number()
    commitment = pseudonym_commitment([Pseudonym.parse(dave)])
    served.store.record_usage(RoundUsage(study_id=served.study, round=2, phase="train", block=pinned,
                                         pseudonyms=json.dumps([dave]), commitment=str(commitment)))

    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                  device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(15_000)
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    try:
        page.goto(served.url + "/enrol")
        _enrol(page, served, "carol", 3)
        page.get_by_role("button", name="Open my account").click()
        _log_in(page, served, "carol")
        page.get_by_role("link", name="Details, history and your choice").click()
        fits = "document.documentElement.scrollWidth <= window.innerWidth"
        assert page.evaluate(fits), "the study page scrolls sideways on a phone"
        button = page.get_by_role("button", name="I agree that my data is used").bounding_box()
        assert button["height"] >= 44 and button["width"] >= 300  # a thumb-sized, full-width button
        save_screenshot(page, "portal-phone")
        # Fast on a phone: one small page, one stylesheet, one script, nothing from anywhere else.
        assert all(url.startswith(served.url) for url in fetched), [u for u in fetched if not u.startswith(served.url)]
        assert len(page.content().encode()) < 30_000
        main = page.locator("main").inner_text()
        assert "No change recorded yet" in main and "No round has used your data" in main
        # The study id is 64 random hex digits: Dave's block number may stand inside it by chance.
        assert dave not in page.content() and str(daves["block"]) not in main.replace(served.study, "")

        # Dave's change, Dave's round, Dave's pseudonym: none of them through Carol's session.
        for path in (f"/api/changes/{daves['change_id']}", f"/api/studies/{served.study}/rounds/2"):
            assert page.request.get(served.url + path).status == 404
        page.goto(f"{served.url}/studies/{served.study}?change={daves['change_id']}")
        assert "no change" in page.get_by_role("alert").inner_text()
        assert page.request.get(served.url + "/api/me").json()["pseudonym"] == served.pseudonym_of("carol")
        assert page.request.get(f"{served.url}/api/studies/{served.study}/rounds").json() == []
        fhir = page.request.get(f"{served.url}/api/studies/{served.study}/consent.fhir.json").json()
        assert fhir["patient"]["identifier"]["value"] == served.pseudonym_of("carol")
        assert fhir["provision"]["type"] == "deny"
    finally:
        context.close()
