"""Relaying signed consent changes to the chain, one at a time, in a background thread.

A request hands over a grant or revocation the patient signed and gets a `ConsentRelay` row back at once
(status "sent"); the worker sends it with the hospital's account and marks it "recorded" (with the block)
or "failed" (with the reason). Pages poll the row; the JSON API waits a little for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from sqlmodel import Session, select

from contracts.ledger import ChainUnavailable, ContractRejected, Ledger, LedgerError, SignedGrant, SignedRevoke
from node.portal.accounts import PortalError
from node.portal.models import ConsentRelay, PortalAccount, now
from node.store import Store
from federation.ids import hex0x

log = logging.getLogger("twinledger.portal.relay")

RESTARTED = ("the portal restarted before the ledger answered: look at your current choice, and send the change "
             "again if it is not there")


class Relayer:
    def __init__(self, store: Store, ledger: Callable[[], Ledger], chain_lock: threading.Lock):
        self._store = store
        self._ledger = ledger
        self._lock = chain_lock
        # One worker: the hospital account's transactions go out in order.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consent-relay")

    def forget_interrupted(self) -> None:
        """At the server's start: changes left "sent" by a previous run will never hear from their worker."""
        with self._store.session() as session:
            for row in session.exec(select(ConsentRelay).where(ConsentRelay.status == "sent")):
                row.status, row.reason, row.failure_status, row.finished_at = "failed", RESTARTED, 503, now()
                session.add(row)
            session.commit()

    def submit(self, db: Session, account: PortalAccount, study_id: str, signed: SignedGrant | SignedRevoke
               ) -> tuple[ConsentRelay, Future]:
        pending = db.exec(select(ConsentRelay).where(ConsentRelay.account_id == account.id,
                                                     ConsentRelay.status == "sent")).first()
        if pending is not None:
            raise PortalError("your last change is still on its way to the ledger: wait until it is recorded", status=409)
        action = "grant" if isinstance(signed, SignedGrant) else "revoke"
        row = ConsentRelay(account_id=account.id, study_id=study_id.lower(), action=action)
        db.add(row)
        db.commit()
        db.refresh(row)
        return row, self._pool.submit(self._relay, row.id, signed)

    def _relay(self, relay_id: int, signed: SignedGrant | SignedRevoke) -> None:
        try:
            with self._lock:
                ledger = self._ledger()
                if isinstance(signed, SignedGrant):
                    receipt = ledger.relay_grants([signed])[-1]
                else:
                    receipt = ledger.relay_revoke(signed)
            self._finish(relay_id, status="recorded", block=int(receipt["blockNumber"]),
                         tx_hash=hex0x(receipt["transactionHash"]))
        except ContractRejected as exc:
            self._finish(relay_id, status="failed", reason=f"the ledger refused: {exc}", failure_status=409)
        except ChainUnavailable as exc:
            log.warning("relay %s: chain unavailable: %s", relay_id, exc)
            self._finish(relay_id, status="failed", reason="the consent ledger cannot be reached: try again later",
                         failure_status=503)
        except LedgerError as exc:
            log.warning("relay %s: %s", relay_id, exc)
            self._finish(relay_id, status="failed", reason="the consent ledger could not answer: try again later",
                         failure_status=503)
        except Exception:  # noqa: BLE001 - the row must never stay "sent"
            log.exception("relay %s failed", relay_id)
            self._finish(relay_id, status="failed", reason="the change could not be sent: try again later",
                         failure_status=503)

    def _finish(self, relay_id: int, **fields) -> None:
        with self._store.session() as session:
            row = session.get(ConsentRelay, relay_id)
            for name, value in fields.items():
                setattr(row, name, value)
            row.finished_at = now()
            session.add(row)
            session.commit()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


def change_of(db: Session, account: PortalAccount, change_id: int) -> ConsentRelay:
    """One of the patient's own changes; any other id is 404, as if it did not exist."""
    row = db.get(ConsentRelay, change_id)
    if row is None or row.account_id != account.id:
        raise PortalError(f"no change {change_id} of yours", status=404)
    db.refresh(row)
    return row
