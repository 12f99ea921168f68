"""The change desk (node/portal/desk.py): changes handed in together are checked, signed and queued as one batch
(one query for the sessions, one chain read per study, one outbox commit), and each patient still gets the answer
they would have had alone: a bad cookie, CSRF token, study or password, or a second change on its way, refuses
that patient only."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event
from sqlmodel import select

from benchmarks.load import run_in_own_loop
from contracts.ledger import ChainUnavailable
from federation.web.errors import WebError
from node.portal.accounts import PortalError
from node.portal.desk import ChangeAsk, Queued
from node.portal.models import ConsentRelay, LoginFailure

from .test_portal import PASSWORD, portal, two  # noqa: F401 - fixtures


def _ask(portal, client, csrf: dict, *, password: str, study: str | None = None, action: str = "grant") -> ChangeAsk:
    return ChangeAsk(cookie=client.cookies.get(portal.settings.cookie_name), csrf=csrf.get("X-CSRF-Token"),
                     client="127.0.0.1", study_id=study or portal.study, action=action, password=password)


def _in_one_batch(state, asks: list[ChangeAsk]) -> tuple[list, list[int]]:
    """Every ask handed to the desk before its thread starts, so that one batch takes them all."""
    batches, sizes = state.desk._batches, []
    serve = batches._serve
    batches.hand = batches._handed.put  # queued; the thread is not started yet
    batches._serve = lambda batch: sizes.append(len(batch)) or serve(batch)

    async def everyone():
        tasks = [asyncio.create_task(state.desk.change(ask)) for ask in asks]
        await asyncio.sleep(0.05)  # each task has handed its change in and waits for the answer
        batches.start()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        return run_in_own_loop(everyone()), sizes
    finally:
        del batches.hand  # the class's again
        batches._serve = serve


@pytest.fixture
def two_logged_in(two):
    portal, people = two
    return portal, people, portal.app.state.portal


def test_a_batch_answers_each_patient_as_alone_with_one_session_query(two_logged_in):
    portal, people, state = two_logged_in
    (alice, alice_csrf, _), (bob, bob_csrf, _) = people["alice"], people["bob"]
    session_queries = []
    event.listen(state.store.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: session_queries.append(statement)
                 if "FROM portalsession" in statement else None)
    asks = [
        _ask(portal, alice, alice_csrf, password=PASSWORD["alice"]),
        _ask(portal, alice, alice_csrf, password=PASSWORD["alice"]),  # a second change while the first is on its way
        _ask(portal, bob, bob_csrf, password="not bob's password"),
        _ask(portal, bob, {"X-CSRF-Token": "forged"}, password=PASSWORD["bob"]),
        _ask(portal, bob, bob_csrf, password=PASSWORD["bob"], study="0x" + "ab" * 32),
        ChangeAsk(cookie="no such session", csrf="x", client="127.0.0.1", study_id=portal.study, action="grant",
                  password=PASSWORD["bob"]),
    ]
    answers, sizes = _in_one_batch(state, asks)
    assert sizes == [len(asks)]
    assert isinstance(answers[0], Queued) and answers[0].row.status == "sent" and not answers[0].consent_before.granted
    assert isinstance(answers[1], PortalError) and answers[1].status == 409 and "on its way" in str(answers[1])
    assert isinstance(answers[2], PortalError) and answers[2].status == 403 and "password" in str(answers[2])
    assert isinstance(answers[3], WebError) and answers[3].status == 403 and answers[3].code == "csrf"
    assert isinstance(answers[4], PortalError) and answers[4].status == 404
    assert isinstance(answers[5], WebError) and answers[5].status == 401
    assert len([q for q in session_queries if q.lstrip().upper().startswith("SELECT")]) == 1
    with portal.store.session() as db:
        rows = db.exec(select(ConsentRelay)).all()
        failures = db.exec(select(LoginFailure).where(LoginFailure.kind == "session")).all()
    assert [(r.id, r.action) for r in rows] == [(answers[0].row.id, "grant")]  # only Alice's one change is queued
    assert len(failures) == 1  # Bob's wrong password counts against his session


def test_a_chain_that_cannot_be_read_refuses_the_batch_and_queues_nothing(two_logged_in, monkeypatch):
    portal, people, state = two_logged_in

    def away(*_args, **_kwargs):
        raise ChainUnavailable("the chain cannot be reached (connection refused)")

    monkeypatch.setattr(type(portal.chain.hospital), "patient_states", away)
    asks = [_ask(portal, client, csrf, password=PASSWORD[name]) for name, (client, csrf, _) in people.items()]
    answers, _ = _in_one_batch(state, asks)
    assert all(isinstance(a, ChainUnavailable) for a in answers), answers
    with portal.store.session() as db:
        assert db.exec(select(ConsentRelay)).all() == []
    # over HTTP the same refusal is a 503 that says why, never a 500
    client, csrf, _ = people["alice"]
    answer = client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD["alice"]}, headers=csrf)
    assert answer.status_code == 503 and "cannot be reached" in answer.json()["detail"]


def test_guesses_sent_together_with_a_stolen_cookie_get_no_more_tries_than_one_at_a_time(two_logged_in):
    portal, people, state = two_logged_in
    alice, alice_csrf, _ = people["alice"]
    allowed = state.settings.max_failures_per_account
    guesses = [_ask(portal, alice, alice_csrf, password=f"guess number {i}") for i in range(4 * allowed)]
    answers, sizes = _in_one_batch(state, guesses)
    assert sizes == [len(guesses)]
    statuses = [a.status for a in answers]
    assert statuses.count(403) == allowed and statuses.count(429) == len(guesses) - allowed, statuses
    with portal.store.session() as db:
        assert len(db.exec(select(LoginFailure).where(LoginFailure.kind == "session")).all()) == allowed
