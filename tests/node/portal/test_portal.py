"""The patient portal (node/portal): enrolment, login, CSRF, rate limits, consent, rounds, FHIR export,
isolation between patients and clear 4xx answers to bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlmodel import select

from contracts import ledger as lg
from federation.commitment import combined_commitment, pseudonym_commitment
from federation.ids import Pseudonym, hex0x
from node import admin
from node.portal import accounts, security
from node.portal.app import create_app
from node.portal.models import EnrolmentCode, PortalAccount
from node.portal.settings import PortalSettings
from node.store import RoundUsage, Store

DATA = Path(__file__).resolve().parents[3] / "deploy" / "data" / "heart-disease"
PASSWORD = {"alice": "correct horse battery", "bob": "staple tuna river ok"}


class Portal:
    def __init__(self, chain, home: Path):
        self.chain = chain
        node = admin.init_node(home, hospital="cleveland", rpc_url="unused", deployment_file=None)
        records = home / "cleveland-6.csv"
        records.write_text("\n".join((DATA / "processed.cleveland.data").read_text().splitlines()[:6]) + "\n")
        admin.import_records(node, records)
        self.settings = PortalSettings(node=node)
        self.staff_token = accounts.create_staff_token(self.settings)
        self.app = create_app(self.settings, ledger=chain.hospital)
        self.store = Store(node.resolved_database_url)
        self.records = [p.record_number for p in self.store.patients()]
        self.study = str(chain.study_id)

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="https://testserver")

    def staff(self, client: TestClient, record_number: str):
        return client.post("/api/staff/enrolment-codes", json={"record_number": record_number},
                           headers={"Authorization": f"Bearer {self.staff_token}"})

    def enrol(self, name: str, record_number: str) -> dict:
        client = self.client()
        code = self.staff(client, record_number).json()["code"]
        answer = client.post("/api/enrolment", json={"code": code, "username": name, "password": PASSWORD[name]})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def login(self, name: str) -> tuple[TestClient, dict]:
        client = self.client()
        answer = client.post("/api/session", json={"username": name, "password": PASSWORD[name]})
        assert answer.status_code == 201, answer.text
        return client, {"X-CSRF-Token": answer.json()["csrf_token"]}


@pytest.fixture
def portal(chain, tmp_path):
    return Portal(chain, tmp_path / "node")


@pytest.fixture
def two(portal):
    """Alice and Bob enrolled and logged in, each in their own browser."""
    alice = portal.enrol("alice", portal.records[0])
    bob = portal.enrol("bob", portal.records[1])
    return portal, {"alice": (*portal.login("alice"), alice), "bob": (*portal.login("bob"), bob)}


def test_enrolment_binds_a_fresh_key_on_chain_and_keeps_it_sealed(portal):
    client = portal.client()
    me = portal.enrol("alice", portal.records[1])
    pseudonym = Pseudonym.parse(me["pseudonym"])
    on_chain = portal.chain.hospital.consent.functions.patientOf(pseudonym).call()
    assert on_chain[0] == me["consent_address"]
    with portal.store.session() as session:
        account = session.exec(select(PortalAccount)).one()
        codes = list(session.exec(select(EnrolmentCode)))
    # Only the password's scrypt hash, the sealed key and the code's hash are stored.
    assert PASSWORD["alice"].encode() not in account.password_hash and len(account.sealed_key) == 12 + 32 + 16
    assert [len(c.code_hash) for c in codes] == [64] and codes[0].used_at is not None
    key = security.open_key(account.sealed_key, account.key_salt, PASSWORD["alice"], associated=account.pseudonym)
    assert Account.from_key(key).address == me["consent_address"]
    with pytest.raises(security.WrongPassword):
        security.open_key(account.sealed_key, account.key_salt, "another password", associated=account.pseudonym)
    # The code is one-time; the patient cannot be enrolled again.
    assert portal.staff(client, portal.records[1]).status_code == 409


def test_enrolment_codes_need_the_staff_token_and_are_one_time(portal):
    client = portal.client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": portal.staff_token}):
        answer = client.post("/api/staff/enrolment-codes", json={"record_number": portal.records[0]}, headers=headers)
        assert answer.status_code == 401 and "staff token" in answer.json()["detail"]
    assert portal.staff(client, "NO-SUCH-RECORD").status_code == 404
    code = portal.staff(client, portal.records[0]).json()["code"]
    first = client.post("/api/enrolment", json={"code": code, "username": "alice", "password": PASSWORD["alice"]})
    assert first.status_code == 201
    again = client.post("/api/enrolment", json={"code": code, "username": "alice2", "password": PASSWORD["alice"]})
    assert again.status_code == 400 and "already used" in again.json()["detail"]
    code = portal.staff(client, portal.records[1]).json()["code"]
    taken = client.post("/api/enrolment", json={"code": code.lower(), "username": "alice", "password": "x" * 12})
    assert taken.status_code == 409
    short = client.post("/api/enrolment", json={"code": code, "username": "bob", "password": "short"})
    assert short.status_code == 422


def test_login_sets_a_strict_http_only_cookie_and_logout_ends_it(portal):
    portal.enrol("alice", portal.records[0])
    client = portal.client()
    answer = client.post("/api/session", json={"username": "alice", "password": PASSWORD["alice"]})
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
    assert client.get("/api/me").json()["username"] == "alice"
    csrf = answer.json()["csrf_token"]
    assert client.delete("/api/session").status_code == 403  # no CSRF token
    assert client.delete("/api/session", headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert client.delete("/api/session", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.get("/api/me").status_code == 401
    # The old token is dead on the server too, not just removed from the browser.
    stale = portal.client()
    stale.cookies.set(portal.settings.cookie_name, answer.cookies[portal.settings.cookie_name])
    assert stale.get("/api/me").status_code == 401


def test_password_change_reseals_the_same_key(two):
    portal, people = two
    client, csrf, me = people["alice"]
    body = {"password": "wrong password", "new_password": "a brand new password"}
    assert client.post("/api/me/password", json=body, headers=csrf).status_code == 403
    assert client.post("/api/me/password", json={**body, "password": PASSWORD["alice"]}).status_code == 403  # CSRF
    assert client.post("/api/me/password", json={**body, "password": PASSWORD["alice"]}, headers=csrf).status_code == 200
    assert client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD["alice"]},
                       headers=csrf).status_code == 403
    granted = client.post(f"/api/studies/{portal.study}/grant", json={"password": "a brand new password"}, headers=csrf)
    assert granted.status_code == 200 and granted.json()["consent"]["granted"]
    assert portal.client().post("/api/session", json={"username": "alice",
                                                      "password": "a brand new password"}).status_code == 201


def test_login_is_rate_limited_per_account(portal):
    portal.enrol("alice", portal.records[0])
    client = portal.client()
    for _ in range(5):
        assert client.post("/api/session", json={"username": "alice", "password": "not it at all"}).status_code == 401
    locked = client.post("/api/session", json={"username": "alice", "password": PASSWORD["alice"]})
    assert locked.status_code == 429 and "Retry-After" in locked.headers
    unknown = client.post("/api/session", json={"username": "nobody", "password": "whatever123"})
    assert unknown.status_code == 401 and unknown.json()["detail"] == "user name or password is not correct"


def test_login_is_rate_limited_per_client_address(portal):
    client = portal.client()
    for i in range(portal.settings.max_failures_per_ip):
        client.post("/api/session", json={"username": f"user{i}", "password": "guess-guess"})
    assert client.post("/api/session", json={"username": "fresh", "password": "guess-guess"}).status_code == 429


def test_patient_sees_the_study_grants_revokes_and_exports_fhir(two):
    portal, people = two
    client, csrf, me = people["alice"]
    (study,) = client.get("/api/studies").json()
    assert study["study_id"] == portal.study and study["purpose"] == "health research"
    assert study["epsilon_budget"] == 3.0 and study["rounds"] == 5 and study["consent"]["granted"] is False
    wrong = client.post(f"/api/studies/{portal.study}/grant", json={"password": "not my password"}, headers=csrf)
    assert wrong.status_code == 403
    granted = client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD["alice"]}, headers=csrf)
    assert granted.status_code == 200, granted.text
    block = granted.json()["block"]
    pseudonym = Pseudonym.parse(me["pseudonym"])
    assert portal.chain.hospital.has_consent(pseudonym, portal.chain.study_id, block=block)
    assert not portal.chain.hospital.has_consent(pseudonym, portal.chain.study_id, block=block - 1)
    fhir = client.get(f"/api/studies/{portal.study}/consent.fhir.json")
    assert fhir.headers["content-type"].startswith("application/fhir+json")
    assert fhir.json()["resourceType"] == "Consent" and fhir.json()["provision"]["type"] == "permit"
    revoked = client.post(f"/api/studies/{portal.study}/revoke", json={"password": PASSWORD["alice"]}, headers=csrf)
    assert revoked.status_code == 200 and revoked.json()["consent"]["granted"] is False
    detail = client.get(f"/api/studies/{portal.study}").json()
    assert [(h["granted"], h["block"]) for h in detail["history"]] == [(True, block), (False, revoked.json()["block"])]
    assert client.get(f"/api/studies/{portal.study}/consent.fhir.json").json()["provision"]["type"] == "deny"
    # Bob's consent did not move.
    bob = Pseudonym.parse(people["bob"][2]["pseudonym"])
    assert portal.chain.hospital.consent_changes(portal.chain.study_id) and not any(
        c.pseudonym == bob for c in portal.chain.hospital.consent_changes(portal.chain.study_id))


def test_rounds_that_used_the_patient(two):
    portal, people = two
    alice, bob = people["alice"][2]["pseudonym"], people["bob"][2]["pseudonym"]
    chain = portal.chain
    block = chain.hospital.block_number()
    for phase in ("train", "evaluate"):
        used = sorted([alice])
        portal.store.record_usage(RoundUsage(
            study_id=portal.study, round=1, phase=phase, block=block, pseudonyms=json.dumps(used),
            commitment=str(pseudonym_commitment(map(Pseudonym.parse, used)))))
    commitment = pseudonym_commitment([Pseudonym.parse(alice)])
    chain.coordinator.anchor_round(chain.study_id, 1, pinned_block=block, model_hash=b"\x05" * 32,
                                   commitments={chain.hospital.address: combined_commitment(commitment, commitment)})
    client, _, _ = people["alice"]
    (round_1,) = client.get(f"/api/studies/{portal.study}/rounds").json()
    assert round_1["round"] == 1 and round_1["phases"] == ["evaluate", "train"] and round_1["pinned_block"] == block
    assert round_1["model_hash"] == "0x" + "05" * 32 and round_1["anchored_block"] > block
    assert people["bob"][0].get(f"/api/studies/{portal.study}/rounds").json() == []
    assert bob not in json.loads(portal.store.usage()[0].pseudonyms)


def test_a_patient_can_never_see_or_change_another_patients_data(two):
    portal, people = two
    client, csrf, me = people["alice"]
    bob_csrf = people["bob"][1]
    # Nothing in any endpoint takes a patient id: the session decides whose data it is.
    assert client.get("/api/me").json()["pseudonym"] == me["pseudonym"]
    # Bob's CSRF token does not work in Alice's session; Bob's password does not unlock Alice's key.
    assert client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD["alice"]},
                       headers=bob_csrf).status_code == 403
    assert client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD["bob"]},
                       headers=csrf).status_code == 403
    # Extra fields naming someone else are refused, not silently ignored.
    for path in ("grant", "revoke"):
        sneaky = client.post(f"/api/studies/{portal.study}/{path}", headers=csrf,
                             json={"password": PASSWORD["alice"], "pseudonym": people["bob"][2]["pseudonym"]})
        assert sneaky.status_code == 422
    assert client.get(f"/api/studies/{portal.study}/consent.fhir.json?pseudonym="
                      + people["bob"][2]["pseudonym"]).json()["patient"]["identifier"]["value"] == me["pseudonym"]
    # A study this hospital never accepted is invisible.
    other = portal.chain.consortium.propose_study(epsilon_budget=1, delta_exponent=5, rounds=2, ends_at=2**31)
    portal.chain.other_hospital.accept_study(other)
    for method, suffix in (("get", ""), ("get", "/rounds"), ("get", "/consent.fhir.json"), ("post", "/grant"),
                           ("post", "/revoke")):
        kwargs = {"json": {"password": PASSWORD["alice"]}, "headers": csrf} if method == "post" else {}
        answer = getattr(client, method)(f"/api/studies/{other}{suffix}", **kwargs)
        assert answer.status_code == 404, (suffix, answer.text)
    # Alice's grant leaves Bob's consent alone; without a session nothing is readable.
    client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD["alice"]}, headers=csrf)
    assert people["bob"][0].get("/api/studies").json()[0]["consent"]["granted"] is False
    anonymous = portal.client()
    for path in ("/api/me", "/api/studies", f"/api/studies/{portal.study}", f"/api/studies/{portal.study}/rounds",
                 f"/api/studies/{portal.study}/consent.fhir.json"):
        assert anonymous.get(path).status_code == 401
    # A staff token is not a patient session, and a patient session is not a staff token.
    assert client.post("/api/staff/enrolment-codes", json={"record_number": portal.records[2]},
                       headers=csrf).status_code == 401


def test_bad_input_gets_a_clear_4xx(two):
    portal, people = two
    client, csrf, _ = people["alice"]
    study = portal.study
    cases = [
        client.get("/api/studies/0x1234"),
        client.get("/api/studies/" + "zz" * 33),
        client.get("/api/studies/0x" + "11" * 32),
        client.post(f"/api/studies/{study}/grant", content=b"{not json", headers={**csrf, "content-type": "application/json"}),
        client.post(f"/api/studies/{study}/grant", json={}, headers=csrf),
        client.post(f"/api/studies/{study}/grant", json={"password": 5}, headers=csrf),
        client.post(f"/api/studies/{study}/grant", json={"password": PASSWORD["alice"], "valid_until": "yesterday"}, headers=csrf),
        client.post(f"/api/studies/{study}/grant", json={"password": PASSWORD["alice"], "valid_until": "2001-01-01T00:00:00Z"}, headers=csrf),
        client.post(f"/api/studies/{study}/grant", json={"password": PASSWORD["alice"], "valid_until": "2200-01-01T00:00:00Z"}, headers=csrf),
        client.post(f"/api/studies/{study}/grant", json={"password": "x" * 10_000}, headers=csrf),
        client.post("/api/session", json={"username": "alice"}),
        client.post("/api/session", json=["alice"]),
        client.post("/api/enrolment", json={"code": "AAAAA-BBBBB", "username": "Ünïcode", "password": "x" * 12}),
        client.post("/api/enrolment", json={"code": "AAAAA-BBBBB", "username": "carol", "password": "long enough pw"}),
        portal.staff(client, ""),
        client.get("/api/nothing-here"),
        client.put("/api/session"),
    ]
    for answer in cases:
        assert 400 <= answer.status_code < 500, (answer.request.url, answer.status_code, answer.text)
        assert answer.json()["detail"]


# ---- server-rendered pages ----

def _form_token(page: str) -> str:
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def _post_form(client: TestClient, path: str, fields: dict):
    from urllib.parse import urlencode

    return client.post(path, content=urlencode(fields), follow_redirects=False,
                       headers={"content-type": "application/x-www-form-urlencoded"})


def test_pages_enrol_log_in_grant_and_withdraw(portal):
    browser = portal.client()
    code = portal.staff(browser, portal.records[0]).json()["code"]
    page = browser.get("/enrol").text
    assert '<label for="code">' in page and 'lang="en"' in page
    fields = {"code": code, "username": "alice", "password": PASSWORD["alice"], "password2": PASSWORD["alice"]}
    assert _post_form(browser, "/enrol", fields).status_code == 403  # no form token
    opened = _post_form(browser, "/enrol", {**fields, "csrf_token": _form_token(page)})
    assert opened.status_code == 200 and "Your account is open" in opened.text
    login = _post_form(browser, "/login", {"username": "alice", "password": PASSWORD["alice"],
                                           "csrf_token": _form_token(opened.text)})
    assert login.status_code == 303 and login.headers["location"] == "/studies"
    listing = browser.get("/studies").text
    assert "For health research" in listing and "you do not agree" in listing
    detail = browser.get(f"/studies/{portal.study}").text
    token = _form_token(detail)
    assert 'for="grant-password"' in detail
    forged = _post_form(browser, f"/studies/{portal.study}/grant", {"password": PASSWORD["alice"], "csrf_token": "x"})
    assert forged.status_code == 403
    wrong = _post_form(browser, f"/studies/{portal.study}/grant", {"password": "nope nope", "csrf_token": token})
    assert wrong.status_code == 403 and "password is not correct" in wrong.text
    bad_date = _post_form(browser, f"/studies/{portal.study}/grant",
                          {"password": PASSWORD["alice"], "csrf_token": token, "valid_until": "31/12/2027"})
    assert bad_date.status_code == 422 and "2027-12-31" in bad_date.text
    granted = _post_form(browser, f"/studies/{portal.study}/grant", {"password": PASSWORD["alice"], "csrf_token": token})
    assert granted.status_code == 303
    after = browser.get(granted.headers["location"]).text
    assert "Your consent is recorded on the ledger" in after and "You agree" in after
    withdrawn = _post_form(browser, f"/studies/{portal.study}/revoke", {"password": PASSWORD["alice"], "csrf_token": token})
    assert "withdrawal is recorded" in browser.get(withdrawn.headers["location"]).text
    assert _post_form(browser, "/logout", {"csrf_token": token}).status_code == 303
    assert browser.get("/studies", follow_redirects=False).headers["location"] == "/login"


def test_pages_answer_bad_input_with_a_readable_page(portal):
    browser = portal.client()
    assert browser.get("/studies/0x12").status_code == 422
    assert browser.get("/nowhere").status_code == 404
    assert browser.post("/login", json={"username": "a"}).status_code == 415
    assert _post_form(browser, "/login", {"username": "a"}).status_code == 403
    page = browser.get("/login").text
    empty = _post_form(browser, "/login", {"username": "", "password": "", "csrf_token": _form_token(page)})
    assert empty.status_code == 422 and 'role="alert"' in empty.text
    big = browser.post("/login", content=b"a=" + b"x" * 20_000, headers={"content-type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413
    assert browser.get("/static/portal.css").headers["content-type"].startswith("text/css")


def test_an_unreachable_chain_is_a_503_not_a_500(portal, tmp_path):
    dead_node = portal.settings.node.replace(rpc_url="http://127.0.0.1:9", deployment_file=tmp_path / "deployment.json",
                                             chain_timeout_s=1)
    portal.chain.deployment.save(dead_node.deployment_file)
    dead = TestClient(create_app(portal.settings.replace(node=dead_node)), base_url="https://testserver")
    code = portal.staff(dead, portal.records[0]).json()["code"]
    answer = dead.post("/api/enrolment", json={"code": code, "username": "alice", "password": PASSWORD["alice"]})
    assert answer.status_code == 503 and "cannot be reached" in answer.json()["detail"]
    bad = dead.post("/api/enrolment", json={"code": "AAAAA-BBBBB", "username": "carol", "password": "long enough pw"})
    assert bad.status_code == 400  # a wrong code is refused before the chain is asked
    # The code was not spent by the failed attempt.
    again = portal.client().post("/api/enrolment", json={"code": code, "username": "alice", "password": PASSWORD["alice"]})
    assert again.status_code == 201


# ---- wallet-owned keys, relays followed until recorded, rounds checked against the chain ----

def _wallet_sign(key: str, typed: dict) -> str:
    """What a wallet does with eth_signTypedData_v4."""
    return hex0x(Account.sign_typed_data(key, full_message=typed).signature)


def test_a_wallet_owned_key_signs_and_the_portal_checks_the_signer_before_relaying(portal):
    wallet = Account.create()
    client = portal.client()
    code = portal.staff(client, portal.records[0]).json()["code"]
    me = client.post("/api/enrolment", json={"code": code, "username": "alice", "password": PASSWORD["alice"],
                                             "wallet_address": wallet.address.lower()})
    assert me.status_code == 201, me.text
    assert me.json()["key_custody"] == "wallet" and me.json()["consent_address"] == wallet.address
    pseudonym = Pseudonym.parse(me.json()["pseudonym"])
    assert portal.chain.hospital.consent.functions.patientOf(pseudonym).call()[0] == wallet.address
    with portal.store.session() as session:
        account = session.exec(select(PortalAccount)).one()
    assert account.sealed_key == b"" and account.key_salt == b""  # the hospital holds nothing it could sign with
    client, csrf = portal.login("alice")
    study = portal.study
    refused = client.post(f"/api/studies/{study}/grant", json={"password": PASSWORD["alice"]}, headers=csrf)
    assert refused.status_code == 409 and "wallet" in refused.json()["detail"]

    typed = client.get(f"/api/studies/{study}/grant/typed-data").json()
    assert typed["primaryType"] == "Grant" and typed["domain"]["verifyingContract"] == portal.chain.deployment.consent_registry
    m = typed["message"]
    # The portal's typed data is exactly what the contract verifies: same signature as the ledger client's.
    expected = lg.sign_grant(wallet.key, portal.chain.deployment, pseudonym=pseudonym, study_id=portal.chain.study_id,
                             valid_from=m["validFrom"], valid_until=m["validUntil"], nonce=m["nonce"], deadline=m["deadline"])
    assert _wallet_sign(wallet.key, typed) == hex0x(expected.signature)
    body = {"valid_from": m["validFrom"], "valid_until": m["validUntil"], "nonce": m["nonce"], "deadline": m["deadline"]}
    # A signature by any other key (the hospital's, say) is refused before anything is sent.
    forged = client.post(f"/api/studies/{study}/grant/signed", headers=csrf,
                         json={**body, "signature": _wallet_sign(Account.create().key, typed)})
    assert forged.status_code == 403 and wallet.address in forged.json()["detail"]
    assert client.post(f"/api/studies/{study}/grant/signed", json={**body, "signature": _wallet_sign(wallet.key, typed)}
                       ).status_code == 403  # no CSRF token
    stretched = client.post(f"/api/studies/{study}/grant/signed", headers=csrf,
                            json={**body, "valid_until": m["validUntil"] + 1, "signature": _wallet_sign(wallet.key, typed)})
    assert stretched.status_code == 403  # the signature covers the window: changing it changes the signer
    assert not portal.chain.hospital.has_consent(pseudonym, portal.chain.study_id)

    granted = client.post(f"/api/studies/{study}/grant/signed", headers=csrf,
                          json={**body, "signature": _wallet_sign(wallet.key, typed)})
    assert granted.status_code == 200, granted.text
    result = granted.json()
    assert result["status"] == "recorded" and result["consent"]["granted"]
    assert portal.chain.hospital.has_consent(pseudonym, portal.chain.study_id, block=result["block"])
    change = client.get(f"/api/changes/{result['change_id']}").json()
    assert change["status"] == "recorded" and change["block"] == result["block"] and change["on_chain"] is True
    replayed = client.post(f"/api/studies/{study}/grant/signed", headers=csrf,
                           json={**body, "signature": _wallet_sign(wallet.key, typed)})
    assert replayed.status_code == 409 and "nonce" in replayed.json()["detail"]

    typed = client.get(f"/api/studies/{study}/revoke/typed-data").json()
    revoked = client.post(f"/api/studies/{study}/revoke/signed", headers=csrf, json={
        "nonce": typed["message"]["nonce"], "deadline": typed["message"]["deadline"],
        "signature": _wallet_sign(wallet.key, typed)})
    assert revoked.status_code == 200 and revoked.json()["consent"]["granted"] is False
    assert not portal.chain.hospital.has_consent(pseudonym, portal.chain.study_id, block=revoked.json()["block"])
    explained = client.get(f"/api/changes/{revoked.json()['change_id']}").json()["explanation"]
    assert "From the next training round on" in explained

    # Another patient sees none of it.
    portal.enrol("bob", portal.records[1])
    bob, _ = portal.login("bob")
    assert bob.get(f"/api/changes/{result['change_id']}").status_code == 404
    assert bob.get(f"/api/studies/{study}/grant/typed-data").status_code == 409  # Bob's key is held by the portal


def test_wallet_enrolment_refuses_bad_addresses(portal):
    client = portal.client()
    code = portal.staff(client, portal.records[0]).json()["code"]
    good = Account.create().address
    bad_checksum = good[:2] + (good[2:3].swapcase() if good[2:3].isalpha() else good[2:3]) + good[3:]
    for address in ("0x1234", "0x" + "00" * 20, "not an address", bad_checksum if bad_checksum != good else "0x" + "g" * 40):
        answer = client.post("/api/enrolment", json={"code": code, "username": "alice", "password": PASSWORD["alice"],
                                                     "wallet_address": address})
        assert answer.status_code == 422 and answer.json()["detail"], address
    # The code was not spent by the refused attempts.
    assert client.post("/api/enrolment", json={"code": code, "username": "alice", "password": PASSWORD["alice"],
                                               "wallet_address": good}).status_code == 201


def test_a_change_is_followed_until_the_chain_records_it(portal):
    app = create_app(portal.settings.replace(relay_wait_s=0.2), ledger=portal.chain.hospital)
    portal.app = app
    me = portal.enrol("alice", portal.records[0])
    client, csrf = portal.login("alice")
    state = app.state.portal
    with state.chain_lock:  # the chain is busy with someone else's transaction
        sent = client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD["alice"]}, headers=csrf)
        assert sent.status_code == 202 and sent.json()["status"] == "sent" and sent.json()["block"] is None
        change = client.get(f"/api/changes/{sent.json()['change_id']}").json()
        assert change["status"] == "sent" and "Until it is recorded" in change["explanation"]
        again = client.post(f"/api/studies/{portal.study}/revoke", json={"password": PASSWORD["alice"]}, headers=csrf)
        assert again.status_code == 409 and "still on its way" in again.json()["detail"]
    for _ in range(100):
        change = client.get(f"/api/changes/{sent.json()['change_id']}").json()
        if change["status"] != "sent":
            break
        import time
        time.sleep(0.05)
    assert change["status"] == "recorded" and change["on_chain"] is True and change["confirmations"] >= 1
    pseudonym = Pseudonym.parse(me["pseudonym"])
    assert portal.chain.hospital.has_consent(pseudonym, portal.chain.study_id, block=change["block"])
    assert client.get("/api/changes/999999").status_code == 404


def test_a_round_that_used_the_patient_can_be_checked_against_the_chain(two):
    portal, people = two
    alice, bob = people["alice"][2]["pseudonym"], people["bob"][2]["pseudonym"]
    chain = portal.chain
    block = chain.hospital.block_number()
    used = sorted([alice, bob])
    commitments = {}
    for phase in ("train", "evaluate"):
        commitments[phase] = pseudonym_commitment(map(Pseudonym.parse, used))
        portal.store.record_usage(RoundUsage(study_id=portal.study, round=1, phase=phase, block=block,
                                             pseudonyms=json.dumps(used), commitment=str(commitments[phase])))
    client, _, _ = people["alice"]
    before = client.get(f"/api/studies/{portal.study}/rounds/1").json()
    assert before["anchored_block"] is None and before["matches"] is False and before["commitment_on_chain"] is None
    chain.coordinator.anchor_round(chain.study_id, 1, pinned_block=block, model_hash=b"\x07" * 32, commitments={
        chain.hospital.address: combined_commitment(commitments["train"], commitments["evaluate"])})
    proof = client.get(f"/api/studies/{portal.study}/rounds/1").json()
    assert proof["matches"] is True and proof["anchored_block"] > block and proof["model_hash"] == "0x" + "07" * 32
    assert proof["consortium"] == chain.deployment.consortium and proof["hospital_account"] == chain.hospital.address
    page = client.get(f"/studies/{portal.study}/rounds/1").text
    assert "Checked:" in page and proof["commitment_from_log"] in page
    assert client.get(f"/api/studies/{portal.study}/rounds/2").status_code == 404
    assert client.get(f"/api/studies/{portal.study}/rounds/0").status_code == 422


def test_a_restart_marks_changes_left_on_their_way_and_old_databases_get_the_new_column(portal, tmp_path):
    from sqlalchemy import create_engine, inspect, text

    from node.portal.models import ConsentRelay, upgrade

    with portal.store.session() as session:
        session.add(ConsentRelay(account_id=1, study_id=portal.study, action="grant"))
        session.commit()
    create_app(portal.settings, ledger=portal.chain.hospital)  # the server starts again on the same home
    with portal.store.session() as session:
        (row,) = session.exec(select(ConsentRelay)).all()
    assert row.status == "failed" and "restarted" in row.reason
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE portalaccount (id INTEGER PRIMARY KEY, username VARCHAR)"))
        connection.execute(text("INSERT INTO portalaccount (username) VALUES ('old')"))
    upgrade(engine)
    assert "key_custody" in {c["name"] for c in inspect(engine).get_columns("portalaccount")}
    with engine.begin() as connection:
        assert connection.execute(text("SELECT key_custody FROM portalaccount")).scalar() == "portal"
