"""The change desk: every consent change a patient makes with their password, signed and queued in batches.

A burst of patients changing consent at once used to cost each request its own database reads, two chain reads,
thread hops and a commit, one after the other under one interpreter lock: about 10 ms each, so the 500th patient
heard "sent" after 5 s. Here a request hands its change to one desk thread and waits (on the event loop, holding
no thread). The desk takes everything handed in meanwhile and does, for all of them together:

1. the login check: one query for the sessions, one for their accounts (the web kit's Guard, cookie and CSRF);
2. the study's terms (the ChainView's, kept briefly) and the checks a change must pass;
3. the chain: each patient's nonce and consent window, in one JSON-RPC batch per study;
4. the password attempts left, one query; then each key opened (the key wrapped for the session: microseconds)
   and each change signed;
5. the outbox: every signed change stored in one transaction (the outbox's group commit), before anyone hears
   "sent".

Each patient gets their own answer, or the refusal they would have had alone, in the same order of checks:
401/403 (session, CSRF), 404 (study), 409 (wallet key), 422/409 (the consent's window, a suspended study),
503 (chain), 429 (too many wrong passwords), 403 (wrong password), 409/503 (outbox).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from federation import ids
from federation.web.errors import WebError
from federation.web.sessions import Caller
from node.portal import accounts, security, studies
from node.portal.accounts import PortalError
from node.portal.batches import Batches
from node.portal.models import ConsentRelay, PortalAccount
from node.portal.relays import change_row

# Measured with 500 changes at once: batches of 50 or 100 answer the 95th patient about 0.1 s sooner than one batch
# of all (answers flow while later batches are signed); 100 keeps the database round trips fewer.
MOST_PER_BATCH = 100
SCRYPT_THREADS = 2  # a session without a wrapped key opens the sealed key (a scrypt, which releases the GIL)


@dataclass
class ChangeAsk:
    """One patient's change as the request brought it."""

    cookie: str | None
    csrf: str | None  # the X-CSRF-Token header (API), or the form's csrf_token field (`page`)
    client: str
    study_id: str
    action: str  # "grant" or "revoke"
    password: str
    valid_until: int | None = None
    page: bool = False


@dataclass
class Queued:
    """A change in the outbox ("sent"): its row, the patient, and their consent as the chain held it before."""

    row: ConsentRelay
    caller: Caller
    consent_before: studies.ConsentState


@dataclass
class _Work:
    ask: ChangeAsk
    settle: object  # called with (result, error) on the request's event loop
    caller: Caller | None = None
    terms: object = None
    message: dict = field(default_factory=dict)
    consent_before: studies.ConsentState | None = None
    key: bytes | None = None
    error: Exception | None = None

    @property
    def account(self) -> PortalAccount:
        return self.caller.holder


class _Read:
    """The chain as one batch read it, for studies.grant_message and revoke_message: its clock, the nonces."""

    def __init__(self, timestamp: int, nonces: dict[bytes, int]):
        self.timestamp, self.nonces = timestamp, nonces

    def block_timestamp(self) -> int:
        return self.timestamp

    def patient_nonce(self, pseudonym: bytes) -> int:
        return self.nonces[bytes(pseudonym)]


class ChangeDesk:
    def __init__(self, state, *, most_per_batch: int = MOST_PER_BATCH):
        self._state = state  # the PortalState: settings, store, guard, chain view, relayer
        self._batches = Batches(self._serve, lambda work, error: work.settle(None, error), name="consent-desk",
                                most=most_per_batch)
        self._scrypt = ThreadPoolExecutor(max_workers=SCRYPT_THREADS, thread_name_prefix="consent-key")

    def busy(self) -> bool:
        """Whether changes wait to be signed or are being signed."""
        return self._batches.busy()

    async def change(self, ask: ChangeAsk) -> Queued:
        """Sign and queue the patient's change; the Queued change, or the WebError / LedgerError it met."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future = loop.create_future()

        def settle(result, error) -> None:
            if not answer.done():
                answer.set_exception(error) if error is not None else answer.set_result(result)

        self._batches.hand(_Work(ask, lambda result, error: loop.call_soon_threadsafe(settle, result, error)))
        return await answer

    # ---- one batch ----

    def _serve(self, batch: list[_Work]) -> None:
        state = self._state
        with state.store.session() as db:
            self._identify(db, batch)
            self._check_studies(batch)
            self._read_chain(batch)
            self._unlock(db, batch)
        changes = [(w, self._sign(w)) for w in _pending(batch)]
        signed = [(w, change) for w, change in changes if w.error is None]
        rows = state.relayer.submit_many([change_row(w.account, w.ask.study_id, change) for w, change in signed])
        for (work, _), row in zip(signed, rows):
            if isinstance(row, PortalError):
                work.error = row
            else:
                work.settle(Queued(row, work.caller, work.consent_before), None)
        for work in batch:
            if work.error is not None:
                work.settle(None, work.error)

    def _identify(self, db, batch: list[_Work]) -> None:
        guard = self._state.guard
        callers = guard.callers(db, [w.ask.cookie for w in batch], [w.ask.client for w in batch])
        for work, caller in zip(batch, callers):
            try:
                work.caller = (guard.admit_page(caller, form_csrf=work.ask.csrf) if work.ask.page
                               else guard.admit_api(caller, method="POST", csrf=work.ask.csrf))
            except WebError as exc:
                work.error = exc
        db.commit()  # the connection goes back while the chain is asked

    def _check_studies(self, batch: list[_Work]) -> None:
        for work in _pending(batch):
            try:
                work.terms = studies.require_study(self._state.chain, ids.StudyId.parse(work.ask.study_id))
                accounts.require_portal_key(work.account)
            except Exception as exc:  # noqa: BLE001 - a refusal, or the chain away: this patient's answer
                work.error = exc

    def _read_chain(self, batch: list[_Work]) -> None:
        """Each patient's nonce and consent window, one batch per study, and the change's message."""
        chain, settings = self._state.chain, self._state.settings
        by_study: dict[bytes, list[_Work]] = defaultdict(list)
        for work in _pending(batch):
            by_study[bytes(work.terms.study_id)].append(work)
        for study_id, works in by_study.items():
            try:
                block, timestamp = chain.head()
                pseudonyms = [bytes(ids.Pseudonym.parse(w.account.pseudonym)) for w in works]
                states = chain.ledger.patient_states(study_id, pseudonyms, window_block=block)
            except Exception as exc:  # noqa: BLE001 - the chain away: everyone of this study hears so
                for work in works:
                    work.error = exc
                continue
            read = _Read(timestamp, {p: nonce for p, (nonce, _, _) in zip(pseudonyms, states)})
            for work, pseudonym, (_, valid_from, valid_until) in zip(works, pseudonyms, states):
                work.consent_before = studies.consent_at(valid_from, valid_until, timestamp=timestamp)
                try:
                    if work.ask.action == "grant":
                        work.message = studies.grant_message(read, pseudonym, work.terms,
                                                             valid_until=work.ask.valid_until,
                                                             deadline_s=settings.signature_deadline_s)
                    else:
                        work.message = studies.revoke_message(read, pseudonym, study_id,
                                                              deadline_s=settings.signature_deadline_s)
                except PortalError as exc:
                    work.error = exc

    def _unlock(self, db, batch: list[_Work]) -> None:
        """Each patient's key, opened with their password. Wrong passwords count against their login session, and
        a session's guesses handed in together are tried one after the other, up to what it has left: a stolen
        cookie gets no more guesses in one batch than one at a time."""
        settings = self._state.settings
        works = list(_pending(batch))
        left = accounts.password_attempts_left(db, settings, [(w.account, w.caller.session.id) for w in works])
        db.commit()
        # A session opened before wraps existed opens the sealed key (a scrypt): those run two at a time, and only
        # as many per session as it has guesses left (any later one, if still allowed, is opened in turn below).
        budget, slow = dict(left), []
        for work in works:
            login = (work.account.id, work.caller.session.id)
            if not work.caller.session.consent_key_wrap and budget[login] > 0:
                budget[login] -= 1
                slow.append(work)
        keys = dict(zip(map(id, slow), self._scrypt.map(self._open_key, slow))) if slow else {}
        wrong = []
        for work in works:
            login = (work.account.id, work.caller.session.id)
            if left[login] <= 0:
                work.error = accounts.too_many_attempts(settings)
                continue
            work.key = keys[id(work)] if id(work) in keys else self._open_key(work)
            if work.key is None:
                left[login] -= 1
                wrong.append(work)
                work.error = accounts.wrong_password()
        if wrong:
            for work in wrong:
                db.add(accounts.password_failure(work.account, work.caller.session.id))
            db.commit()

    @staticmethod
    def _open_key(work: _Work) -> bytes | None:
        try:
            return accounts.open_consent_key(work.account, work.ask.password, login=work.caller.session,
                                             token=work.ask.cookie or "")
        except security.WrongPassword:
            return None

    def _sign(self, work: _Work):
        key, work.key = work.key, None
        try:
            return studies.sign_with_key(self._state.chain, key, work.message)
        except Exception as exc:  # noqa: BLE001 - this patient's answer; the others are signed
            work.error = exc
            return None


def _pending(batch: list[_Work]):
    return (w for w in batch if w.error is None)
