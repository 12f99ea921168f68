"""Key custody per login session (docs/portal.md, Key custody): a login wraps the patient's consent key for the
session, under the cookie's token and the password, so that a change needs the password but costs no scrypt.
What a thief gets: the database alone opens no key, a cookie alone still needs the password, and a password
change or a logout leaves no wrap that the old password opens."""

from __future__ import annotations

import pytest
from eth_account import Account
from sqlmodel import select

from federation.web import auth
from node.portal import security
from node.portal.models import PortalAccount, PortalSession

from .test_portal import PASSWORD, Portal


@pytest.fixture
def alice(chain, tmp_path):
    portal = Portal(chain, tmp_path / "node")
    portal.enrol("alice", portal.records[0])
    client, csrf = portal.login("alice")
    return portal, client, csrf


def _session_row(portal) -> tuple[PortalAccount, PortalSession]:
    with portal.store.session() as db:
        return db.exec(select(PortalAccount)).one(), db.exec(select(PortalSession)).one()


def test_a_change_in_a_session_costs_no_scrypt_and_still_needs_the_password(alice, monkeypatch):
    portal, client, csrf = alice
    calls = []
    real = security._scrypt
    monkeypatch.setattr(security, "_scrypt", lambda *a: calls.append(1) or real(*a))
    wrong = client.post(f"/api/studies/{portal.study}/grant", json={"password": "not her password"}, headers=csrf)
    assert wrong.status_code == 403 and "password is not correct" in wrong.json()["detail"]
    granted = client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD["alice"]}, headers=csrf)
    assert granted.status_code == 200 and granted.json()["consent"]["granted"]
    assert calls == []


def test_the_database_alone_opens_no_wrapped_key(alice):
    portal, client, _ = alice
    account, row = _session_row(portal)
    token = client.cookies[portal.settings.cookie_name]
    key = security.unwrap_for_session(row.consent_key_wrap, token, PASSWORD["alice"], associated=account.pseudonym)
    assert Account.from_key(key).address == account.consent_address
    # What the database holds of the token is its hash: with it, even the right password opens nothing.
    assert row.token_hash == auth.hash_token(token)
    with pytest.raises(security.WrongPassword):
        security.unwrap_for_session(row.consent_key_wrap, row.token_hash, PASSWORD["alice"], associated=account.pseudonym)


def test_a_stolen_cookie_without_the_password_gets_only_the_few_guesses_a_session_allows(alice):
    portal, client, csrf = alice
    thief = portal.client()
    thief.cookies.set(portal.settings.cookie_name, client.cookies[portal.settings.cookie_name])
    answers = [thief.post(f"/api/studies/{portal.study}/grant", json={"password": f"guess number {i}"}, headers=csrf)
               for i in range(8)]
    assert all(a.status_code in (403, 429) for a in answers) and answers[-1].status_code == 429
    assert not portal.chain.hospital.has_consent(_pseudonym(portal), portal.chain.study_id)


def test_a_password_change_leaves_no_wrap_under_the_old_password(alice):
    portal, client, csrf = alice
    body = {"password": PASSWORD["alice"], "new_password": "a brand new password"}
    assert client.post("/api/me/password", json=body, headers=csrf).status_code == 200
    assert _session_row(portal)[1].consent_key_wrap is None
    old = client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD["alice"]}, headers=csrf)
    assert old.status_code == 403
    new = client.post(f"/api/studies/{portal.study}/grant", json={"password": "a brand new password"}, headers=csrf)
    assert new.status_code == 200


def _pseudonym(portal):
    from federation.ids import Pseudonym
    account, _ = _session_row(portal)
    return Pseudonym.parse(account.pseudonym)
