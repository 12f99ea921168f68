"""The outbox's group commit (node/portal/outbox.py): changes handed in together are stored in one transaction,
each answered only after its commit, and a patient with a change on its way is refused, in a batch as alone."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest
from sqlalchemy import event

from node.portal.accounts import PortalError
from node.portal.models import ConsentRelay
from node.portal.outbox import OutboxWriter
from node.store import Store


def _change(account_id: int) -> ConsentRelay:
    return ConsentRelay(account_id=account_id, study_id="0x" + "ab" * 32, action="grant", pseudonym="0x" + "cd" * 32,
                        nonce=0, deadline=2**40, valid_from=0, valid_until=2**31, signature="0x" + "ef" * 65)


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'node.db'}")
    store.commits = []
    event.listen(store.engine, "commit", lambda _conn: store.commits.append(1))
    return store


def test_changes_handed_in_together_share_one_commit_and_each_gets_its_row(store):
    writer = OutboxWriter(store)
    stored, gate = {}, threading.Barrier(40)

    def hand(account_id: int) -> None:
        gate.wait()
        stored[account_id] = writer.store(_change(account_id))

    threads = [threading.Thread(target=hand, args=(n,)) for n in range(1, 41)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(stored) == list(range(1, 41)) and all(row.id for row in stored.values())
    assert len({row.id for row in stored.values()}) == 40
    assert len(store.commits) < 20  # 40 alone would be 40 commits
    with store.session() as db:
        assert db.query(ConsentRelay).count() == 40


def test_a_patient_with_a_change_on_its_way_is_refused_alone_and_within_one_batch(store):
    writer = OutboxWriter(store)
    writer.store(_change(7))
    with pytest.raises(PortalError) as refused:
        writer.store(_change(7))
    assert refused.value.status == 409 and "still on its way" in str(refused.value)
    first, second = Future(), Future()
    writer._commit([(_change(8), first), (_change(8), second)])
    answers = [first.exception(), second.exception()]
    assert answers[0] is None and isinstance(answers[1], PortalError) and answers[1].status == 409


def test_a_database_that_cannot_be_written_answers_503_and_stores_nothing(store, monkeypatch):
    """A full or read-only disk fails the group's commit: each waiting request hears a 503 it can act on."""
    from sqlalchemy.exc import OperationalError

    writer = OutboxWriter(store)

    def failing_commit(_self):
        raise OperationalError("COMMIT", {}, Exception("database or disk is full"))

    monkeypatch.setattr("sqlmodel.Session.commit", failing_commit)
    with pytest.raises(PortalError) as refused:
        writer.store(_change(9))
    assert refused.value.status == 503 and "nothing was sent" in str(refused.value)
    monkeypatch.undo()
    with store.session() as db:
        assert db.query(ConsentRelay).count() == 0
