"""The portal's outbox (node/portal/relays.py): grants and withdrawals relayed in batches, with a change spent
elsewhere reported for that patient only, one invalid signature failing alone, a change the chain recorded
before a crash recognised as recorded after the restart, and a chain that cannot be reached keeping the changes
until it answers."""

from __future__ import annotations

import threading
import time

import pytest
from sqlmodel import select

from contracts import ledger as lg
from contracts.ledger import ChainUnavailable
from federation.ids import Pseudonym
from node.portal import security
from node.portal.app import create_app
from node.portal.models import ConsentRelay, PortalAccount
from node.portal.relays import Relayer
from tests.node.portal.test_portal import PASSWORD, Portal


@pytest.fixture
def portal(chain, tmp_path):
    portal = Portal(chain, tmp_path / "node")
    portal.app = create_app(portal.settings.replace(relay_wait_s=0), ledger=chain.hospital)  # answers "sent" at once
    return portal


def _account(portal, name: str) -> PortalAccount:
    with portal.store.session() as session:
        return session.exec(select(PortalAccount).where(PortalAccount.username == name)).one()


def _key(portal, name: str) -> bytes:
    account = _account(portal, name)
    return security.open_key(account.sealed_key, account.key_salt, PASSWORD[name], associated=account.pseudonym)


def _settled(portal, change_id: int, *, timeout_s: float = 30) -> ConsentRelay:
    deadline = time.monotonic() + timeout_s
    while True:
        with portal.store.session() as session:
            row = session.get(ConsentRelay, change_id)
        if row.status != "sent" or time.monotonic() > deadline:
            return row
        time.sleep(0.05)


def test_a_grant_spent_elsewhere_is_reported_for_that_patient_and_the_rest_of_the_batch_is_recorded(portal):
    chain = portal.chain
    alice, bob = portal.enrol("alice", portal.records[0]), portal.enrol("bob", portal.records[1])
    sent = {}
    with portal.app.state.portal.chain_lock:  # the worker waits: both grants go out in one batch
        for name in ("alice", "bob"):
            client, csrf = portal.login(name)
            answer = client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD[name]}, headers=csrf)
            assert answer.status_code == 202 and answer.json()["status"] == "sent", answer.text
            sent[name] = answer.json()["change_id"]
        # Meanwhile Alice's nonce is spent by another grant of hers (another window), relayed by someone else.
        until = chain.hospital.block_timestamp() + 86400
        other = lg.sign_grant(_key(portal, "alice"), chain.deployment, pseudonym=Pseudonym.parse(alice["pseudonym"]),
                              study_id=chain.study_id, valid_from=0, valid_until=until, nonce=0,
                              deadline=until)
        chain.other_hospital.relay_grants([other])
    skipped, recorded = _settled(portal, sent["alice"]), _settled(portal, sent["bob"])
    assert skipped.status == "failed" and "skipped" in skipped.reason and "sign again" in skipped.reason
    assert recorded.status == "recorded" and recorded.block is not None
    assert chain.hospital.has_consent(Pseudonym.parse(bob["pseudonym"]), chain.study_id, block=recorded.block)
    client, _ = portal.login("alice")
    change = client.get(f"/api/changes/{sent['alice']}").json()
    assert change["status"] == "failed" and "skipped" in change["explanation"]


def test_one_invalid_signature_in_a_batch_fails_alone(portal):
    chain = portal.chain
    portal.enrol("alice", portal.records[0])
    portal.enrol("bob", portal.records[1])
    state = portal.app.state.portal
    with state.chain_lock:
        client, csrf = portal.login("alice")
        good = client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD["alice"]}, headers=csrf)
        bob = _account(portal, "bob")
        until = chain.hospital.block_timestamp() + 86400
        forged = lg.sign_grant(_key(portal, "alice"), chain.deployment, pseudonym=Pseudonym.parse(bob.pseudonym),
                               study_id=chain.study_id, valid_from=0, valid_until=until, nonce=0, deadline=until)
        with state.store.session() as session:  # a signature not by Bob's key, in Bob's place in the outbox
            bad = state.relayer.submit(session, bob, portal.study, forged)
    assert _settled(portal, good.json()["change_id"]).status == "recorded"
    refused = _settled(portal, bad.id)
    assert refused.status == "failed" and "is not the patient's" in refused.reason
    assert not chain.hospital.has_consent(Pseudonym.parse(bob.pseudonym), chain.study_id)


def test_withdrawals_go_many_to_a_transaction_and_a_replayed_or_forged_one_does_not_hold_back_the_others(portal):
    """Issue 15: withdrawals were relayed one per transaction. Now a burst goes out as one revokeBatchBySig; a
    withdrawal somebody relayed first is recognised as recorded, a forged one fails alone."""
    chain = portal.chain
    PASSWORD.setdefault("carol", "carol's long password")
    names = ("alice", "bob", "carol")
    me = {name: portal.enrol(name, portal.records[i]) for i, name in enumerate(names)}
    for name in names:
        client, csrf = portal.login(name)
        granted = client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD[name]}, headers=csrf)
        assert _settled(portal, granted.json()["change_id"]).status == "recorded"
    state, sent = portal.app.state.portal, {}
    with state.chain_lock:  # the worker waits: the three withdrawals go out in one batch
        for name in ("alice", "bob"):
            client, csrf = portal.login(name)
            answer = client.post(f"/api/studies/{portal.study}/revoke", json={"password": PASSWORD[name]}, headers=csrf)
            assert answer.status_code == 202, answer.text
            sent[name] = answer.json()["change_id"]
        with state.store.session() as session:  # Bob's signed withdrawal, relayed by someone else first
            row = session.get(ConsentRelay, sent["bob"])
            bobs = lg.SignedRevoke(Pseudonym.parse(row.pseudonym), chain.study_id, row.nonce, row.deadline,
                                   bytes.fromhex(row.signature[2:]))
        replayed_at = int(chain.other_hospital.relay_revoke(bobs)["blockNumber"])
        carol = _account(portal, "carol")  # a signature not by Carol's key, in Carol's place in the outbox
        pseudonym = Pseudonym.parse(carol.pseudonym)
        forged = lg.sign_revoke(_key(portal, "alice"), chain.deployment, pseudonym=pseudonym, study_id=chain.study_id,
                                nonce=chain.hospital.patient_nonce(pseudonym),
                                deadline=chain.hospital.block_timestamp() + 3600)
        with state.store.session() as session:
            sent["carol"] = state.relayer.submit(session, carol, portal.study, forged).id
    alice, bob, carol = (_settled(portal, sent[name]) for name in names)
    assert alice.status == "recorded" and not chain.hospital.has_consent(
        Pseudonym.parse(me["alice"]["pseudonym"]), chain.study_id, block=alice.block)
    assert (bob.status, bob.block) == ("recorded", replayed_at)
    assert carol.status == "failed" and "is not the patient's" in carol.reason
    assert chain.hospital.has_consent(pseudonym, chain.study_id)
    tx = chain.hospital.w3.eth.get_transaction(alice.tx_hash)
    call, _ = chain.hospital.consent.decode_function_input(tx["input"])
    assert call.fn_name == "revokeBatchBySig"


def test_a_withdrawal_the_chain_recorded_before_a_crash_is_recorded_after_the_restart(portal):
    chain = portal.chain
    me = portal.enrol("alice", portal.records[0])
    pseudonym = Pseudonym.parse(me["pseudonym"])
    client, csrf = portal.login("alice")
    granted = client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD["alice"]}, headers=csrf)
    assert _settled(portal, granted.json()["change_id"]).status == "recorded"
    # The portal sent the withdrawal and crashed before it heard the receipt: the row is still "sent".
    revoke = lg.sign_revoke(_key(portal, "alice"), chain.deployment, pseudonym=pseudonym, study_id=chain.study_id,
                            nonce=chain.hospital.patient_nonce(pseudonym), deadline=chain.hospital.block_timestamp() + 3600)
    with portal.store.session() as session:
        row = ConsentRelay(account_id=_account(portal, "alice").id, study_id=portal.study, action="revoke",
                           pseudonym=me["pseudonym"], nonce=revoke.nonce, deadline=revoke.deadline,
                           signature="0x" + revoke.signature.hex())
        session.add(row)
        session.commit()
        change_id = row.id
    block = int(chain.hospital.relay_revoke(revoke)["blockNumber"])
    create_app(portal.settings, ledger=chain.hospital)  # the portal starts again: it resumes its outbox
    row = _settled(portal, change_id)
    assert row.status == "recorded" and row.block == block
    assert not chain.hospital.has_consent(pseudonym, chain.study_id)


def test_while_the_chain_cannot_be_reached_changes_wait_in_the_outbox_and_go_when_it_answers(portal):
    chain = portal.chain
    me = portal.enrol("alice", portal.records[0])
    reachable = threading.Event()

    def ledger():
        if not reachable.is_set():
            raise ChainUnavailable("the chain cannot be reached (connection refused)")
        return chain.hospital

    state = portal.app.state.portal
    relayer = Relayer(state.store, ledger, threading.Lock())  # driven by hand, no thread
    key = _key(portal, "alice")
    revoke = lg.sign_revoke(key, chain.deployment, pseudonym=Pseudonym.parse(me["pseudonym"]), study_id=chain.study_id,
                            nonce=0, deadline=chain.hospital.block_timestamp() + 3600)
    relayer.start = lambda: None  # no worker thread: the test drives it
    with state.store.session() as session:
        row = relayer.submit(session, _account(portal, "alice"), portal.study, revoke)
    with pytest.raises(Exception):
        relayer.relay_waiting()
    client, _ = portal.login("alice")
    waiting = client.get(f"/api/changes/{row.id}").json()
    assert waiting["status"] == "sent" and "cannot be reached" in waiting["explanation"]
    reachable.set()
    assert relayer.relay_waiting() is True
    done = client.get(f"/api/changes/{row.id}").json()
    assert done["status"] == "recorded" and done["on_chain"] is True
