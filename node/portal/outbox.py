"""Group commit for the consent outbox: many requests' changes stored in one transaction.

A commit on this machine's disk is an fsync of about 6 ms, and SQLite runs one writer at a time: 500 patients
changing consent at once, each committing alone, queue for 3 s behind each other's fsyncs. Here a request hands
its signed change to one writer thread and waits; the thread stores everything handed to it meanwhile in one
transaction, then answers each request: the row (durable now) or why it was refused. Nothing is answered "sent"
before its commit.
"""

from __future__ import annotations

import time
from concurrent.futures import Future

from sqlalchemy.exc import OperationalError
from sqlmodel import col, select

from node.portal.accounts import PortalError
from node.portal.batches import Batches
from node.portal.models import ConsentRelay
from node.store import Store

ONE_AT_A_TIME = "your last change is still on its way to the ledger: wait until it is recorded"
UNCONFIRMED = ("the portal could not confirm in time that it stored your change: look at your current choice "
               "in a minute before you send it again")


class OutboxWriter:
    def __init__(self, store: Store, *, most_per_commit: int = 500):
        self._store = store
        self._batches = Batches(self._commit, _tell, name="consent-outbox", most=most_per_commit)

    def store(self, row: ConsentRelay, *, timeout_s: float = 90.0) -> ConsentRelay:
        """Store `row` (a new change), committed; PortalError 409 while the same patient has a change on its way,
        503 if the database could not be written (nothing stored) or did not answer in time (perhaps stored)."""
        stored = self.store_many([row], timeout_s=timeout_s)[0]
        if isinstance(stored, PortalError):
            raise stored
        return stored

    def store_many(self, rows: list[ConsentRelay], *, timeout_s: float = 90.0) -> list[ConsentRelay | PortalError]:
        """`store` for many changes handed in together: each one's stored row, or the PortalError it met."""
        handed = []
        for row in rows:
            done: Future = Future()
            self._batches.hand((row, done))
            handed.append(done)
        deadline = time.monotonic() + timeout_s
        return [self._outcome(done, deadline) for done in handed]

    @staticmethod
    def _outcome(done: Future, deadline: float) -> ConsentRelay | PortalError:
        try:
            return done.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return PortalError(UNCONFIRMED, status=503)
        except OperationalError as exc:
            return PortalError(f"the portal could not store your change ({exc.orig}): nothing was sent; try again",
                               status=503)
        except PortalError as exc:
            return exc

    def _commit(self, batch: list[tuple[ConsentRelay, Future]]) -> None:
        accounts = {row.account_id for row, _ in batch}
        with self._store.session() as session:
            busy = set(session.exec(select(ConsentRelay.account_id).where(
                col(ConsentRelay.account_id).in_(accounts), ConsentRelay.status == "sent")).all())
            stored = []
            for row, done in batch:
                if row.account_id in busy:
                    done.set_exception(PortalError(ONE_AT_A_TIME, status=409))
                    continue
                busy.add(row.account_id)  # a second change of the same patient in this batch waits its turn too
                session.add(row)
                stored.append((row, done))
            session.commit()  # expire_on_commit is off: each row keeps its id
        for row, done in stored:
            done.set_result(row)


def _tell(handed: tuple[ConsentRelay, Future], error: Exception) -> None:
    _, done = handed
    if not done.done():
        done.set_exception(error)
