"""Relaying signed consent changes to the chain: a durable outbox (the `consentrelay` table) and one worker.

A request stores the change the patient signed in the outbox and answers at once ("sent"): it holds no
database connection and waits on no chain. The worker thread takes what is waiting and sends it with the
hospital's account, many to a transaction: withdrawals first (`revokeBatchBySig`, where a bad signature is
skipped alone), then grants (`grantBatchBySig`). It marks each change "recorded" (block, transaction) or
"failed" (the reason, in words a patient can read). When the chain cannot be reached it keeps the change and tries again
until the signature's deadline. The outbox is read again when the portal starts: nothing signed is lost to a
restart, and a change the chain recorded before the crash is recognised as recorded, not sent twice.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future

from sqlmodel import Session, select

from contracts.ledger import ContractRejected, Ledger, SignedGrant, SignedRevoke
from contracts.ledger.consent import GRANT_BATCH, REVOKE_BATCH
from federation.ids import Pseudonym, StudyId, from_hex0x, hex0x
from node.portal.accounts import PortalError
from node.portal.models import ConsentRelay, PortalAccount, now
from node.portal.outbox import OutboxWriter
from node.store import Store

log = logging.getLogger("twinledger.portal.relay")

RESTARTED = ("the portal restarted before the ledger answered: look at your current choice, and send the change "
             "again if it is not there")
EXPIRED = "its signature expired before the consent ledger could record it: sign the change again"
SKIPPED = ("the ledger skipped it: its signature was already used or voided (another change of yours, or a "
           "cancellation, came first): look at your current choice and sign again if it is not what you want")
UNREACHABLE = "the consent ledger cannot be reached; the portal keeps trying until the signature expires"
# Why a batch of withdrawals skipped one (ConsentRegistry.Refusal; a spent nonce is handled as a skipped grant is).
REVOCATION_REFUSED = {
    "Expired": "its signature expired before the consent ledger could record it: sign the change again",
    "UnknownPseudonym": "the consent ledger does not know your pseudonym: ask the hospital",
    "WrongNonce": "its signature is out of order (another change of yours is on its way): sign the change again",
    "WrongSigner": "the signature is not the patient's consent key",
}


class _Transient(Exception):
    """The chain did not answer: keep the change and try again later."""


class Relayer:
    def __init__(self, store: Store, ledger, chain_lock: threading.Lock, *, batch: int = GRANT_BATCH,
                 idle_s: float = 5.0, retry_s: float = 2.0, yield_to=None, most_yield_s: float = 2.0):
        self._store = store
        # While patients' changes are being signed (`yield_to()` true), the worker waits, up to `most_yield_s`:
        # building a transaction takes the interpreter lock the signing needs, and a patient waits for "sent",
        # not for the block; what waits meanwhile joins the next transaction.
        self._yield_to, self.most_yield_s = yield_to, most_yield_s
        self._outbox = OutboxWriter(store)
        self._ledger = ledger  # a function giving the hospital's Ledger (opened on first use)
        self._lock = chain_lock  # one relayed transaction at a time: the hospital account's nonces stay in order
        self.batch, self.idle_s, self.retry_s = batch, idle_s, retry_s
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._waiters: dict[int, Future] = {}
        self._waiters_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ---- the request's side ----

    def submit(self, db: Session, account: PortalAccount, study_id: str, signed: SignedGrant | SignedRevoke
               ) -> ConsentRelay:
        """Put the signed change in the outbox (committed, with whatever other requests hand in meanwhile: it
        survives a crash from here on) and wake the worker."""
        db.commit()  # the request's own connection goes back: the outbox's writer stores the change
        stored = self.submit_many([change_row(account, study_id, signed)])[0]
        if isinstance(stored, PortalError):
            raise stored
        return db.merge(stored, load=False)  # the request's session follows it from here

    def submit_many(self, rows: list[ConsentRelay]) -> list[ConsentRelay | PortalError]:
        """`submit` for changes signed together (the change desk's batch): each one's stored row, or why not."""
        stored = self._outbox.store_many(rows)
        with self._waiters_lock:
            for row in stored:
                if not isinstance(row, PortalError):
                    self._waiters[row.id] = Future()
        self.start()
        self._wake.set()
        return stored

    def finished(self, change_id: int) -> Future | None:
        """A future done when the worker has recorded or failed this change (None if it is not waited for here)."""
        with self._waiters_lock:
            return self._waiters.get(change_id)

    # ---- the worker ----

    def start(self) -> None:
        """Start the worker (once: the first change submitted starts it, or `resume` finding changes waiting)."""
        with self._waiters_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="consent-relay", daemon=True)
        self._thread.start()

    def resume(self) -> int:
        """At the server's start: rows from before the outbox carry no signature and can never be sent: they
        are marked failed. Returns how many changes wait to be sent (start the worker if any)."""
        with self._store.session() as session:
            for row in session.exec(select(ConsentRelay).where(ConsentRelay.status == "sent",
                                                               ConsentRelay.signature == None)):  # noqa: E711
                row.status, row.reason, row.failure_status, row.finished_at = "failed", RESTARTED, 503, now()
                session.add(row)
            session.commit()
            waiting = len(session.exec(select(ConsentRelay.id).where(ConsentRelay.status == "sent")).all())
        if waiting:
            log.info("resuming the outbox: %d consent change(s) still to send", waiting)
        return waiting

    def shutdown(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._let_signing_finish()
            try:
                busy = self.relay_waiting()
            except _Transient as exc:
                log.warning("the consent ledger did not answer (%s): trying again in %.0f s", exc, self.retry_s)
                self._stopping.wait(self.retry_s)
                continue
            except Exception:  # noqa: BLE001 - the worker must outlive any one bad batch; the rows stay queued
                log.exception("relaying consent changes failed: trying again in %.0f s", self.retry_s)
                self._stopping.wait(self.retry_s)
                continue
            if not busy:
                self._wake.wait(self.idle_s)
                self._wake.clear()

    def _let_signing_finish(self) -> None:
        deadline = time.monotonic() + self.most_yield_s
        while self._yield_to is not None and self._yield_to() and time.monotonic() < deadline:
            self._stopping.wait(0.01)

    def relay_waiting(self) -> bool:
        """Send one batch from the outbox (withdrawals first); False when nothing was waiting."""
        with self._lock:  # taken first: what queues up while another transaction goes out joins this batch
            with self._store.session() as session:
                rows = list(session.exec(select(ConsentRelay).where(ConsentRelay.status == "sent")
                                         .order_by(ConsentRelay.action == "grant", ConsentRelay.id).limit(self.batch)))
            if not rows:
                return False
            try:
                ledger = self._ledger()
                chain_now = ledger.block_timestamp()
            except Exception as exc:  # noqa: BLE001 - no ledger yet, or no chain: both mean try again
                self._note_waiting(rows)
                raise _Transient(str(exc)) from exc
            expired = [r for r in rows if r.deadline is not None and r.deadline < chain_now]
            self._finish(expired, status="failed", reason=EXPIRED, failure_status=409)
            live = [r for r in rows if r not in expired]
            try:
                revokes = [r for r in live if r.action == "revoke"]
                if revokes:
                    self._relay_revokes(ledger, revokes)
                grants = [r for r in live if r.action == "grant"]
                if grants:
                    self._relay_grants(ledger, grants)
            except _Transient:
                self._note_waiting([r for r in live if r.status == "sent"])
                raise
        return True

    def _relay_revokes(self, ledger: Ledger, rows: list[ConsentRelay]) -> None:
        signed = [SignedRevoke(Pseudonym.parse(r.pseudonym), StudyId.parse(r.study_id), r.nonce, r.deadline,
                               from_hex0x(r.signature)) for r in rows]
        try:
            receipts = _transient_guard(lambda: ledger.relay_revokes(signed))
        except ContractRejected as exc:
            self._one_at_a_time(ledger, rows, exc, self._relay_revokes)
            return
        for pseudonym, nonce, reason in ledger.skipped_revocations(receipts):
            for row in rows:
                if (row.pseudonym.lower(), row.nonce) != (hex0x(pseudonym), nonce) or row.status != "sent":
                    continue
                if reason == "NonceSpent":
                    self._refused(ledger, row, None)
                else:
                    log.info("change %s: withdrawal skipped (%s)", row.id, reason)
                    self._finish([row], status="failed", failure_status=409,
                                 reason="the ledger refused: " + REVOCATION_REFUSED.get(reason, reason))
        self._recorded(rows, receipts, per_receipt=REVOKE_BATCH)

    def _relay_grants(self, ledger: Ledger, rows: list[ConsentRelay]) -> None:
        signed = [SignedGrant(Pseudonym.parse(r.pseudonym), StudyId.parse(r.study_id), r.valid_from, r.valid_until,
                              r.nonce, r.deadline, from_hex0x(r.signature)) for r in rows]
        try:
            receipts = _transient_guard(lambda: ledger.relay_grants(signed))
        except ContractRejected as exc:
            self._one_at_a_time(ledger, rows, exc, self._relay_grants)
            return
        skipped = {(hex0x(p), n) for p, n in ledger.skipped_grants(receipts)}
        for row in rows:
            if (row.pseudonym.lower(), row.nonce) in skipped:
                self._refused(ledger, row, None)
        self._recorded(rows, receipts, per_receipt=GRANT_BATCH)

    def _one_at_a_time(self, ledger: Ledger, rows: list[ConsentRelay], exc: ContractRejected, relay) -> None:
        """A lone change refused fails; a refused batch (one invalid grant reverts it) is sent one at a time, so
        that the invalid one fails alone."""
        if len(rows) == 1:
            self._refused(ledger, rows[0], exc)
            return
        log.warning("a batch of %d changes was refused (%s): sending them one at a time", len(rows), exc)
        for row in rows:
            relay(ledger, [row])

    def _recorded(self, rows: list[ConsentRelay], receipts: list[dict], *, per_receipt: int) -> None:
        """Mark what is still "sent" recorded, at the block of its transaction (the ledger client sends
        `per_receipt` changes per transaction)."""
        for i, receipt in enumerate(receipts):
            chunk = [r for r in rows[i * per_receipt:(i + 1) * per_receipt] if r.status == "sent"]
            self._finish(chunk, status="recorded", block=int(receipt["blockNumber"]),
                         tx_hash=hex0x(receipt["transactionHash"]))

    def _refused(self, ledger: Ledger, row: ConsentRelay, exc: ContractRejected | None) -> None:
        """The chain refused or skipped a change. If its nonce was spent because this very change was recorded
        before (the portal crashed before it heard the receipt), it is recorded; otherwise it failed."""
        spent = exc is None or (exc.error_name == "WrongNonce" and _transient_guard(
            lambda: ledger.patient_nonce(Pseudonym.parse(row.pseudonym))) > row.nonce)
        found = _recorded_before(ledger, row) if spent else None
        if found is not None:
            block, tx_hash = found
            self._finish([row], status="recorded", block=block, tx_hash=tx_hash)
        elif spent:
            log.info("change %s: %s skipped (nonce %s already spent)", row.id, row.action, row.nonce)
            self._finish([row], status="failed", reason=SKIPPED, failure_status=409)
        else:
            log.info("change %s refused: %s", row.id, exc)
            self._finish([row], status="failed", reason=f"the ledger refused: {exc}", failure_status=409)

    def _note_waiting(self, rows: list[ConsentRelay]) -> None:
        with self._store.session() as session:
            for row in rows:
                stored = session.get(ConsentRelay, row.id)
                if stored is not None and stored.status == "sent":
                    stored.attempts, stored.waiting = stored.attempts + 1, UNREACHABLE
                    session.add(stored)
            session.commit()

    def _finish(self, rows: list[ConsentRelay], **fields) -> None:
        if not rows:
            return
        with self._store.session() as session:
            for row in rows:
                stored = session.get(ConsentRelay, row.id)
                for name, value in fields.items():
                    setattr(stored, name, value)
                    setattr(row, name, value)
                stored.finished_at, stored.waiting = now(), None
                session.add(stored)
            session.commit()
        with self._waiters_lock:
            for row in rows:
                waiter = self._waiters.pop(row.id, None)
                if waiter is not None:
                    waiter.set_result(fields.get("status"))


def change_row(account: PortalAccount, study_id: str, signed: SignedGrant | SignedRevoke) -> ConsentRelay:
    """The outbox row of a signed change."""
    grant = isinstance(signed, SignedGrant)
    return ConsentRelay(account_id=account.id, study_id=study_id.lower(), action="grant" if grant else "revoke",
                        pseudonym=hex0x(signed.pseudonym), nonce=signed.nonce, deadline=signed.deadline,
                        valid_from=signed.valid_from if grant else None,
                        valid_until=signed.valid_until if grant else None, signature=hex0x(signed.signature))


def _transient_guard(send):
    """Run a relay; a chain that did not answer (no receipt, unreachable) becomes _Transient, a refusal stays."""
    try:
        return send()
    except ContractRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - ChainUnavailable, LedgerError and transport errors alike
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc


def _recorded_before(ledger: Ledger, row: ConsentRelay) -> tuple[int, str] | None:
    """(block, transaction) of this change's event, if the chain holds this choice now (the consent window the
    grant asked for, or none after a withdrawal) and an event of the patient and study recorded it."""
    pseudonym, study = Pseudonym.parse(row.pseudonym), StudyId.parse(row.study_id)
    wanted = (row.valid_from, row.valid_until) if row.action == "grant" else (0, 0)
    if _transient_guard(lambda: ledger.consent_window(pseudonym, study)) != wanted:
        return None  # the chain does not hold this choice now
    consent = ledger.consent
    event = consent.events.ConsentGranted if row.action == "grant" else consent.events.ConsentRevoked
    filters = {"pseudonym": pseudonym, "studyId": study}
    logs = _transient_guard(lambda: event.get_logs(from_block=ledger.deployment.deployed_block,
                                                   argument_filters=filters))
    matching = [entry for entry in logs if row.action == "revoke"
                or (entry["args"]["validFrom"], entry["args"]["validUntil"]) == (row.valid_from, row.valid_until)]
    if not matching:
        return None
    last = max(matching, key=lambda entry: (entry["blockNumber"], entry["logIndex"]))
    return int(last["blockNumber"]), hex0x(last["transactionHash"])


def change_of(db: Session, account: PortalAccount, change_id: int) -> ConsentRelay:
    """One of the patient's own changes; any other id is 404, as if it did not exist."""
    row = db.get(ConsentRelay, change_id)
    if row is None or row.account_id != account.id:
        raise PortalError(f"no change {change_id} of yours", status=404)
    db.refresh(row)
    return row
