"""Attacks on the patient portal that issue 12 found: a huge unauthenticated login body (#5), wrong logins and
an undeclared proxy stopping a patient from withdrawing (#3, also when logged out: device cookies; from a new
browser: the withdrawal door), a password change leaving other sessions alive (#11)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from federation.ids import Pseudonym, StudyId
from node.portal.app import create_app
from node.portal.models import ConsentRelay
from tests.federation.test_web_attacks import MiB, Attacker, _post
from tests.node.portal.test_portal import PASSWORD, Portal

DEVICE_COOKIE = "twinledger_device"


@pytest.fixture
def portal(chain, tmp_path):
    return Portal(chain, tmp_path / "node")


def test_a_huge_unauthenticated_login_is_refused_with_413_before_it_is_read(portal):
    attacker = Attacker(200 * MiB)
    status, _ = _post(portal.app, "/login", attacker, content_type="application/x-www-form-urlencoded",
                      content_length=None)
    assert status == 413
    assert attacker.pulled <= 16 * 1024 + 64 * 1024
    attacker = Attacker(200 * MiB)
    status, body = _post(portal.app, "/api/session", attacker, content_type="application/json", content_length=10)
    assert status == 413 and body["error"]["status"] == 413
    assert attacker.pulled <= 256 * 1024 + 64 * 1024


def _from(portal, address: str) -> TestClient:
    return TestClient(portal.app, base_url="https://testserver", client=(address, 50000))


def _revoke(portal, client, csrf, password=None):
    return client.post(f"/api/studies/{portal.study}/revoke", json={"password": password or PASSWORD["alice"]},
                       headers=csrf)


def test_wrong_logins_for_a_username_never_stop_the_patient_withdrawing(portal):
    portal.enrol("alice", portal.records[0])
    client, csrf = portal.login("alice")
    attacker = _from(portal, "203.0.113.66")
    for _ in range(3 * portal.settings.max_failures_per_account):
        assert attacker.post("/api/session", json={"username": "alice", "password": "not it"}).status_code in (401, 429)
    revoked = _revoke(portal, client, csrf)
    assert revoked.status_code == 200, revoked.text
    changed = client.post("/api/me/password", headers=csrf,
                          json={"password": PASSWORD["alice"], "new_password": "another long password"})
    assert changed.status_code == 200, changed.text


def test_a_stolen_session_guessing_passwords_does_not_lock_the_patients_own_session(portal):
    portal.enrol("alice", portal.records[0])
    thief, thief_csrf = portal.login("alice")
    client, csrf = portal.login("alice")
    for _ in range(portal.settings.max_failures_per_account):
        assert _revoke(portal, thief, thief_csrf, "guess guess guess").status_code == 403
    assert _revoke(portal, thief, thief_csrf).status_code == 429  # the thief's guesses are limited
    assert _revoke(portal, client, csrf).status_code == 200  # the patient's own session is not


def test_behind_an_undeclared_proxy_failures_of_many_usernames_lock_out_nobody(portal):
    portal.enrol("alice", portal.records[0])
    proxy = _from(portal, "127.0.0.1")  # every client arrives from the proxy's address
    for i in range(2 * portal.settings.max_failures_per_ip):
        proxy.post("/api/session", json={"username": f"user{i}", "password": "guess-guess"},
                   headers={"X-Forwarded-For": f"203.0.113.{i % 200}"})
    login = proxy.post("/api/session", json={"username": "alice", "password": PASSWORD["alice"]},
                       headers={"X-Forwarded-For": "198.51.100.20"})
    assert login.status_code == 201, login.text
    assert _revoke(portal, proxy, {"X-CSRF-Token": login.json()["csrf_token"]}).status_code == 200


def test_behind_a_trusted_proxy_the_limit_sees_each_client(chain, tmp_path):
    portal = Portal(chain, tmp_path / "node")
    portal.app = create_app(portal.settings.model_copy(update={"trusted_proxies": ["10.0.0.5"]}),
                            ledger=chain.hospital)
    portal.enrol("alice", portal.records[0])
    proxy = _from(portal, "10.0.0.5")
    attacker = {"X-Forwarded-For": "203.0.113.7"}
    for i in range(portal.settings.max_failures_per_ip):
        proxy.post("/api/session", json={"username": f"user{i}", "password": "guess-guess"}, headers=attacker)
    assert proxy.post("/api/session", json={"username": "fresh", "password": "guess-guess"},
                      headers=attacker).status_code == 429
    patient = proxy.post("/api/session", json={"username": "alice", "password": PASSWORD["alice"]},
                         headers={"X-Forwarded-For": "198.51.100.20"})
    assert patient.status_code == 201, patient.text
    # A client talking directly cannot pose as another by sending the header itself.
    direct = _from(portal, "203.0.113.7")
    assert direct.post("/api/session", json={"username": "fresh", "password": "guess-guess"},
                       headers={"X-Forwarded-For": "198.51.100.99"}).status_code == 429


def test_a_password_change_ends_the_patients_other_sessions(portal):
    portal.enrol("alice", portal.records[0])
    other, _ = portal.login("alice")  # e.g. someone who had learnt the old password
    client, csrf = portal.login("alice")
    assert other.get("/api/me").status_code == 200
    changed = client.post("/api/me/password", headers=csrf,
                          json={"password": PASSWORD["alice"], "new_password": "another long password"})
    assert changed.status_code == 200, changed.text
    assert other.get("/api/me").status_code == 401
    assert client.get("/api/me").status_code == 200  # the session that changed it stays


def test_wrong_logins_for_a_username_never_lock_the_patient_out_of_a_browser_that_logged_in_before(portal):
    """Issue 12 #3: logged out, a patient could be kept from logging in (and so from withdrawing) for 15 minutes
    by anyone typing wrong passwords for their user name. A browser that logged in before holds a device cookie:
    the lockout of untrusted clients does not reach it (OWASP's device cookies)."""
    portal.enrol("alice", portal.records[0])
    browser, csrf = portal.login("alice")
    assert browser.delete("/api/session", headers=csrf).status_code == 200  # logged out, the device cookie stays
    attacker = _from(portal, "203.0.113.66")
    for _ in range(3 * portal.settings.max_failures_per_account):
        assert attacker.post("/api/session", json={"username": "alice", "password": "not it"}).status_code in (401, 429)
    # Untrusted clients are locked out, even with the right password (the attacker might have guessed it) ...
    stranger = _from(portal, "198.51.100.7")
    assert stranger.post("/api/session", json={"username": "alice", "password": PASSWORD["alice"]}).status_code == 429
    # ... but the patient's own browser logs in and withdraws.
    login = browser.post("/api/session", json={"username": "alice", "password": PASSWORD["alice"]})
    assert login.status_code == 201, login.text
    assert _revoke(portal, browser, {"X-CSRF-Token": login.json()["csrf_token"]}).status_code == 200
    # The login page is the same door.
    page = browser.get("/login").text
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    form = browser.post("/login", data={"username": "alice", "password": PASSWORD["alice"], "csrf_token": token},
                        follow_redirects=False)
    assert form.status_code == 303 and form.headers["location"] == "/studies"


def test_a_device_cookie_gives_its_holder_only_a_few_guesses_and_a_forged_one_is_untrusted(portal):
    portal.enrol("alice", portal.records[0])
    browser, _ = portal.login("alice")
    device = browser.cookies.get(DEVICE_COOKIE)
    assert device
    thief = _from(portal, "203.0.113.9")
    thief.cookies.set(DEVICE_COOKIE, device)
    for _ in range(portal.settings.max_failures_per_account):
        assert thief.post("/api/session", json={"username": "alice", "password": "guess guess"}).status_code == 401
    assert thief.post("/api/session", json={"username": "alice", "password": "guess guess"}).status_code == 429
    # The stolen cookie is locked; untrusted clients were never counted, and a made-up cookie is untrusted.
    forger = _from(portal, "203.0.113.10")
    forger.cookies.set(DEVICE_COOKIE, "made-up-device-cookie")
    assert forger.post("/api/session", json={"username": "alice", "password": PASSWORD["alice"]}).status_code == 201


def _withdraw(client, portal, password=None, username="alice"):
    return client.post("/api/withdrawals", json={"username": username, "password": password or PASSWORD["alice"],
                                                 "study_id": portal.study})


def _granted(portal, client, csrf) -> None:
    granted = client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD["alice"]}, headers=csrf)
    assert granted.status_code == 200 and granted.json()["consent"]["granted"], granted.text
    assert client.delete("/api/session", headers=csrf).status_code == 200


def test_wrong_logins_for_a_username_never_stop_the_patient_withdrawing_from_a_new_browser(portal):
    """Issue 12 #3, the last residual: a browser that never logged in (a new device, cleared cookies) is an
    untrusted client, locked out of logging in while anyone types wrong passwords for the user name. The withdrawal
    door does not share that lockout: the patient's right password withdraws, and the chain records it."""
    portal.enrol("alice", portal.records[0])
    _granted(portal, *portal.login("alice"))
    attacker = _from(portal, "203.0.113.66")
    for _ in range(3 * portal.settings.max_failures_per_account):
        assert attacker.post("/api/session", json={"username": "alice", "password": "not it"}).status_code in (401, 429)
    new_browser = _from(portal, "198.51.100.7")
    assert new_browser.post("/api/session", json={"username": "alice", "password": PASSWORD["alice"]}).status_code == 429
    answer = _withdraw(new_browser, portal)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "recorded" and body["granted"] is False and body["consent"]["granted"] is False
    with portal.store.session() as db:
        row = db.get(ConsentRelay, body["change_id"])
        assert (row.action, row.status, row.block) == ("revoke", "recorded", body["block"])
        assert db.exec(select(ConsentRelay).where(ConsentRelay.action == "revoke")).all() == [row]
    ledger, pseudonym = portal.chain.hospital, Pseudonym.parse(row.pseudonym)
    assert not ledger.has_consent(pseudonym, StudyId.parse(portal.study), block=body["block"])  # the chain says so
    # The same door as a page, linked from the login page, for a browser without scripts.
    page = _from(portal, "198.51.100.8")
    assert 'href="/withdraw"' in page.get("/login").text
    form = page.get("/withdraw").text
    token = form.split('name="csrf_token" value="')[1].split('"')[0]
    assert f'value="{portal.study.lower()}"' in form.lower()
    sent = page.post("/withdraw", data={"username": "alice", "password": PASSWORD["alice"], "study_id": portal.study,
                                        "csrf_token": token})
    assert sent.status_code == 200 and "Your withdrawal is" in sent.text, sent.text
    wrong = page.post("/withdraw", data={"username": "alice", "password": "not it", "study_id": portal.study,
                                         "csrf_token": token})
    assert wrong.status_code == 401 and "not correct" in wrong.text

def test_the_withdrawal_door_gives_each_client_only_a_few_guesses(portal):
    """The door is no way around the brute-force limits: each client gets a few wrong passwords per account (and
    its address a few more across accounts), then even the right password is refused from it; its failures also
    count towards the user name's login lockout."""
    portal.enrol("alice", portal.records[0])
    attacker = _from(portal, "203.0.113.66")
    for _ in range(portal.settings.max_failures_per_account):
        assert _withdraw(attacker, portal, "guess guess guess").status_code == 401
    assert _withdraw(attacker, portal).status_code == 429  # this client's guesses are spent
    assert _from(portal, "198.51.100.8").post(
        "/api/session", json={"username": "alice", "password": PASSWORD["alice"]}).status_code == 429
    sprayer = _from(portal, "203.0.113.67")
    for i in range(portal.settings.max_failures_per_ip):
        assert _withdraw(sprayer, portal, "guess guess guess", username=f"user{i}").status_code in (401, 429)
    assert _withdraw(sprayer, portal, "guess guess guess", username="fresh-name").status_code == 429
    # The patient, from yet another new browser, still withdraws.
    answer = _withdraw(_from(portal, "198.51.100.9"), portal)
    assert answer.status_code == 200, answer.text
    assert _withdraw(portal.client(), portal, username="nobody-here").status_code == 401


def test_a_wallet_patient_on_a_new_browser_withdraws_with_a_signature_while_logins_are_locked(portal):
    """The door for a patient whose wallet holds the key: the password (checked at the door) gives the typed
    data to sign, and the wallet's signature is relayed without a session; a signature by any other key, or
    for a user name that does not exist, is refused alike."""
    from eth_account import Account

    from tests.node.portal.test_portal import _wallet_sign

    wallet = Account.create()
    client = portal.client()
    code = portal.staff(client, portal.records[0]).json()["code"]
    assert client.post("/api/enrolment", json={"code": code, "username": "alice", "password": PASSWORD["alice"],
                                               "wallet_address": wallet.address}).status_code == 201
    attacker = _from(portal, "203.0.113.66")
    for _ in range(3 * portal.settings.max_failures_per_account):
        attacker.post("/api/session", json={"username": "alice", "password": "not it"})
    new_browser = _from(portal, "198.51.100.7")
    assert _withdraw(new_browser, portal).status_code == 409  # the portal holds no key to sign with
    door = {"username": "alice", "password": PASSWORD["alice"], "study_id": portal.study}
    assert new_browser.post("/api/withdrawals/typed-data", json={**door, "password": "not it"}).status_code == 401
    typed = new_browser.post("/api/withdrawals/typed-data", json=door)
    assert typed.status_code == 200, typed.text
    typed = typed.json()
    assert typed["primaryType"] == "Revoke"
    m = typed["message"]
    body = {"username": "alice", "study_id": portal.study, "nonce": m["nonce"], "deadline": m["deadline"]}
    other = _wallet_sign(Account.create().key, typed)
    forged = new_browser.post("/api/withdrawals/signed", json={**body, "signature": other})
    nobody = new_browser.post("/api/withdrawals/signed", json={**body, "username": "nobody", "signature": other})
    assert forged.status_code == nobody.status_code == 403
    assert forged.json()["detail"] == nobody.json()["detail"]
    answer = new_browser.post("/api/withdrawals/signed", json={**body, "signature": _wallet_sign(wallet.key, typed)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "recorded" and answer.json()["granted"] is False
    # The page gives the wallet what to sign (portal.js signs it and sends it to /api/withdrawals/signed).
    page = new_browser.get("/withdraw").text
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    form = new_browser.post("/withdraw", data={**door, "csrf_token": token})
    assert form.status_code == 200 and 'id="wallet-form"' in form.text and "data-typed=" in form.text
