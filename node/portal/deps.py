"""What the portal holds (settings, store, ledger, relayer, its login Guard) and its dependencies, declared once:
`Db`, `Settings`, `State`, `CurrentPatient`, `Me` (the web kit's Caller: session cookie and CSRF) and the staff
token check."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy import create_engine, event
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from contracts.ledger import Ledger, LedgerError
from federation import ids
from federation.web.sessions import Caller, Guard, client_ip
from node.portal import accounts
from node.portal.accounts import PortalError
from node.portal.chain_view import ChainView
from node.portal.desk import ChangeDesk
from node.portal.models import PortalAccount, PortalSession
from node.portal.relays import Relayer
from node.portal.settings import PortalSettings
from node.store import Store

__all__ = ["Caller", "client_ip"]  # the kit's, for the routers


log = logging.getLogger("twinledger.portal")


class PortalState:
    """What the application holds: settings, the node's store, the hospital's ledger client."""

    def __init__(self, settings: PortalSettings, *, ledger: Ledger | None = None):
        self.settings = settings
        # Patients log in with a password (not a console token): sessions in the portal's own table, no Bearer.
        self.guard = Guard(cookie_name=settings.cookie_name, idle_s=settings.session_idle_s, roles=("patient",),
                           bearer=False, table=PortalSession, holder_of=accounts.patient_of,
                           holders_of=accounts.load_patients,
                           not_logged_in="not logged in, or the session has ended: log in again")
        self.store = Store(settings.node.resolved_database_url)  # its migrations cover the portal's tables too
        self.store.engine = _engine_for_many_patients(self.store.engine)
        self._ledger = ledger
        self._opening = threading.Lock()
        self.chain_lock = threading.Lock()  # one relayed transaction at a time: nonces stay in order
        self.desk = ChangeDesk(self)  # patients' password-signed changes, checked, signed and queued in batches
        self.relayer = Relayer(self.store, lambda: self.ledger, self.chain_lock, yield_to=self.desk.busy)
        self.chain = ChainView(lambda: self.ledger)  # what patients' requests read, kept briefly for all of them

    @property
    def ledger(self) -> Ledger:
        """The hospital's ledger client, opened once (by the first of many requests arriving together)."""
        with self._opening:
            if self._ledger is None:
                if self.settings.node.deployment_file is None:
                    raise LedgerError("the node has no deployment file configured (node.toml deployment-file)")
                node = self.settings.node
                self._ledger = Ledger.from_settings(node, key_file=node.hospital_key_file)
            return self._ledger

    def open_ledger_early(self) -> None:
        """At the server's start, in a thread of its own: open the ledger and read the accepted studies and their
        terms, so that the first patients do not wait for them. A chain that cannot be read yet is only logged:
        each request then opens the ledger itself and answers as it always does when the chain is away."""
        def open_now() -> None:
            try:
                for study_id in self.chain.accepted_studies(self.ledger.address):
                    self.chain.study(study_id)
            except Exception as exc:  # noqa: BLE001 - any failure here is the first request's to report
                log.warning("the consent ledger could not be opened at the start (%s): trying again on the first request", exc)

        threading.Thread(target=open_now, name="open-ledger", daemon=True).start()


def _engine_for_many_patients(engine):
    """SQLite for many patients at once: a connection per session rather than a pool of 15 (each request thread
    has its own, so none waits 30 s for a free one and fails), write-ahead logging (readers and the writer never
    wait for each other), and a writer that waits up to 60 s for the others instead of failing after 5 (commits stay synchronous:
    a withdrawal in the outbox survives a power cut)."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return engine
    many = create_engine(engine.url, poolclass=NullPool, connect_args={"check_same_thread": False, "timeout": 60})

    @event.listens_for(many, "connect")
    def _pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    engine.dispose()
    return many


# The dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency on the thread pool, and
# under a burst every such hop of every request queues for a thread and the GIL behind all the others.

async def get_state(request: Request) -> PortalState:
    return request.app.state.portal


async def get_settings(state: Annotated[PortalState, Depends(get_state)]) -> PortalSettings:
    return state.settings


def get_db(state: Annotated[PortalState, Depends(get_state)]) -> Iterator[Session]:
    with state.store.session() as session:
        yield session


def require_staff(
    settings: Annotated[PortalSettings, Depends(get_settings)],
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """Hospital IT's scripts: the staff token of keys/staff.token as a Bearer token."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token or not accounts.staff_token_matches(settings, token.strip()):
        raise PortalError("staff token missing or wrong (Authorization: Bearer <keys/staff.token>)", status=401,
                          headers={"WWW-Authenticate": "Bearer"})


def current_patient(request: Request, db: Annotated[Session, Depends(get_db)],
                    state: Annotated[PortalState, Depends(get_state)]) -> Caller:
    """The logged-in patient (session cookie; X-CSRF-Token on every change): `caller.holder` is the account."""
    return state.guard.require(request, db)


@dataclass
class PatientRequest:
    """What a patient's request works with: who (`caller`; `account` is theirs), the database, the portal."""

    caller: Caller
    db: Session
    state: PortalState

    @property
    def account(self) -> PortalAccount:
        return self.caller.holder

    @property
    def pseudonym(self) -> ids.Pseudonym:
        return ids.Pseudonym.parse(self.account.pseudonym)

    @property
    def settings(self) -> PortalSettings:
        return self.state.settings

    @property
    def ledger(self) -> Ledger:
        """The hospital's ledger for reading, through the portal's ChainView (studies and clock kept briefly)."""
        return self.state.chain


def patient_request(request: Request, db: Annotated[Session, Depends(get_db)],
                    state: Annotated[PortalState, Depends(get_state)]) -> PatientRequest:
    """`current_patient` and what the request works with, in one thread-pool hop."""
    caller = state.guard.require(request, db)
    db.commit()  # hand the connection back to the pool: what follows asks the chain, which may be slow
    return PatientRequest(caller, db, state)


Db = Annotated[Session, Depends(get_db)]
Settings = Annotated[PortalSettings, Depends(get_settings)]
State = Annotated[PortalState, Depends(get_state)]
CurrentPatient = Annotated[Caller, Depends(current_patient)]
Me = Annotated[PatientRequest, Depends(patient_request)]  # the patient's request: caller, db, settings, ledger
