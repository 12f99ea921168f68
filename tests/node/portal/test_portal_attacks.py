"""Attacks on the patient portal that issue 12 found: a huge unauthenticated login body (#5), wrong logins and
an undeclared proxy stopping a patient from withdrawing (#3), a password change leaving other sessions alive
(#11)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from node.portal.app import create_app
from tests.federation.test_web_attacks import MiB, Attacker, _post
from tests.node.portal.test_portal import PASSWORD, Portal


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
