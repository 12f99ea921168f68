"""What the console holds (settings, store, ledger) and its dependencies: DB session, the staff member and role."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from contracts.ledger import Ledger, LedgerError
from federation.web import ConsoleError, auth
from federation.web.models import AccessToken, WebSession, create_tables
from node import admin
from node.console.settings import ROLES, ConsoleSettings
from node.store import Store


BEARER = HTTPBearer(auto_error=False, scheme_name="console token",
                    description="a console token (twinledger node console-token); browsers use the session cookie")


class ConsoleState:
    def __init__(self, settings: ConsoleSettings, *, ledger: Ledger | None = None):
        self.settings = settings
        self.store = Store(settings.node.resolved_database_url)
        create_tables(self.store.engine)
        self._ledger = ledger
        self.import_lock = threading.Lock()  # one import at a time: record numbers are checked, then written
        self._ledger_lock = threading.Lock()

    @property
    def can_open_ledger(self) -> bool:
        return self._ledger is not None or self.settings.node.deployment_file is not None

    def hospital_account(self) -> str:
        """The account this node acts as on chain (the ledger's, else the one in keys/hospital.key)."""
        if self._ledger is not None and self._ledger.address:
            return self._ledger.address
        return admin.hospital_address(self.settings.node)

    def ledger(self) -> Ledger:
        """The hospital's ledger client, opened on first use; raises LedgerError (or ChainUnavailable)."""
        with self._ledger_lock:
            if self._ledger is None:
                node = self.settings.node
                if node.deployment_file is None:
                    raise LedgerError("the node has no deployment file configured (node.toml deployment-file)")
                self._ledger = admin.open_ledger(node)
            return self._ledger


def get_state(request: Request) -> ConsoleState:
    return request.app.state.console


def get_db(state: Annotated[ConsoleState, Depends(get_state)]) -> Iterator[Session]:
    with state.store.session() as session:
        yield session


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@dataclass
class Staff:
    """Who makes the request: a token holder, by Bearer token (scripts) or by session cookie (browser)."""

    holder: AccessToken
    session: WebSession | None
    client: str

    @property
    def name(self) -> str:
        return self.holder.name

    @property
    def role(self) -> str:
        return self.holder.role


def staff_from_request(request: Request, db: Session, settings: ConsoleSettings) -> Staff | None:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        holder = auth.token_holder(db, token.strip())
        return Staff(holder, None, client_ip(request)) if holder and holder.role in ROLES else None
    found = auth.session_for(db, request.cookies.get(settings.cookie_name), idle_s=settings.session_idle_s)
    if found is None:
        return None
    session, holder = found
    return Staff(holder, session, client_ip(request)) if holder.role in ROLES else None


def current_staff(
    request: Request,
    state: Annotated[ConsoleState, Depends(get_state)],
    db: Annotated[Session, Depends(get_db)],
    # Declared for the OpenAPI description; read from the request, so that the session cookie works too.
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
) -> Staff:
    staff = staff_from_request(request, db, state.settings)
    if staff is None:
        raise ConsoleError("not logged in: send Authorization: Bearer <console token>, or log in again", status=401,
                           headers={"WWW-Authenticate": "Bearer"})
    if staff.session is not None and request.method not in ("GET", "HEAD", "OPTIONS"):
        if not auth.csrf_ok(request.headers.get("x-csrf-token"), staff.session):
            raise ConsoleError("missing or wrong CSRF token (send the X-CSRF-Token header)", status=403)
    return staff


def it_admin(staff: Annotated[Staff, Depends(current_staff)]) -> Staff:
    if staff.role != "it-admin":
        raise ConsoleError(f"{staff.name} has the role {staff.role!r}; this needs 'it-admin'", status=403)
    return staff


Db = Annotated[Session, Depends(get_db)]
State = Annotated[ConsoleState, Depends(get_state)]
CurrentStaff = Annotated[Staff, Depends(current_staff)]
ItAdmin = Annotated[Staff, Depends(it_admin)]


def record(db: Session, staff: Staff | None, action: str, *, target: str = "", outcome: str = "ok", detail: str = "",
           client: str = "") -> None:
    """One entry in the action log: who (token name and role), what, on what, and how it ended."""
    auth.record(db, actor=staff.name if staff else "anonymous", role=staff.role if staff else "", action=action,
                target=target, outcome=outcome, detail=detail, client=staff.client if staff else client)
