"""Dependencies: settings, DB session, ledger, the current patient, CSRF, the staff token."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlmodel import Session

from contracts.ledger import Ledger, LedgerError
from node import admin
from node.portal import accounts, security
from node.portal.accounts import PortalError
from node.portal.models import PortalAccount, PortalSession, upgrade
from node.portal.relays import Relayer
from node.portal.settings import PortalSettings
from node.store import Store


class PortalState:
    """What the application holds: settings, the node's store, the hospital's ledger client."""

    def __init__(self, settings: PortalSettings, *, ledger: Ledger | None = None):
        self.settings = settings
        self.store = Store(settings.node.resolved_database_url)  # create_all covers node.portal.models too
        upgrade(self.store.engine)
        self._ledger = ledger
        self.chain_lock = threading.Lock()  # one relayed transaction at a time: nonces stay in order
        self.relayer = Relayer(self.store, lambda: self.ledger, self.chain_lock)

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            if self.settings.node.deployment_file is None:
                raise LedgerError("the node has no deployment file configured (node.toml deployment-file)")
            self._ledger = admin.open_ledger(self.settings.node)
        return self._ledger


def get_state(request: Request) -> PortalState:
    return request.app.state.portal


def get_settings(state: Annotated[PortalState, Depends(get_state)]) -> PortalSettings:
    return state.settings


def get_db(state: Annotated[PortalState, Depends(get_state)]) -> Iterator[Session]:
    with state.store.session() as session:
        yield session


def get_ledger(state: Annotated[PortalState, Depends(get_state)]) -> Ledger:
    return state.ledger


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def require_staff(
    settings: Annotated[PortalSettings, Depends(get_settings)],
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token or not accounts.staff_token_matches(settings, token.strip()):
        raise PortalError("staff token missing or wrong (Authorization: Bearer <keys/staff.token>)", status=401,
                          headers={"WWW-Authenticate": "Bearer"})


@dataclass
class Current:
    account: PortalAccount
    session: PortalSession


def current_patient(
    request: Request,
    db: Annotated[Session, Depends(get_db)],
    settings: Annotated[PortalSettings, Depends(get_settings)],
) -> Current:
    token = request.cookies.get(settings.cookie_name)
    found = accounts.session_for(db, settings, token) if token else None
    if found is None:
        raise PortalError("not logged in, or the session has ended: log in again", status=401)
    row, account = found
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        given = request.headers.get("x-csrf-token", "")
        if not given or not security.same(given, row.csrf_token):
            raise PortalError("missing or wrong CSRF token (send the X-CSRF-Token header)", status=403)
    return Current(account, row)


Db = Annotated[Session, Depends(get_db)]
Settings = Annotated[PortalSettings, Depends(get_settings)]
Chain = Annotated[Ledger, Depends(get_ledger)]
State = Annotated[PortalState, Depends(get_state)]
CurrentPatient = Annotated[Current, Depends(current_patient)]
