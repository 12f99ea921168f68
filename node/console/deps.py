"""What the console holds (settings, store, ledger, its login Guard) and its dependencies, declared once:
`Db`, `State`, `CurrentStaff` (any role), `ItAdmin`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlmodel import Session

from contracts.ledger import Ledger, LedgerError
from federation.web.errors import WebError
from federation.web.sessions import BEARER, Caller, Guard, client_ip, log_action, require_role
from node import admin
from node.console.settings import ROLES, ConsoleSettings
from node.store import Store

__all__ = ["Caller", "ConsoleState", "CurrentStaff", "Db", "ItAdmin", "State", "client_ip", "record"]


class ConsoleState:
    def __init__(self, settings: ConsoleSettings, *, ledger: Ledger | None = None):
        self.settings = settings
        self.guard = Guard(cookie_name=settings.cookie_name, idle_s=settings.session_idle_s, roles=ROLES)
        self.store = Store(settings.node.resolved_database_url)  # its migrations cover the console's tables too
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
                self._ledger = Ledger.from_settings(node, key_file=node.hospital_key_file)
            return self._ledger


def get_state(request: Request) -> ConsoleState:
    return request.app.state.console


def get_db(state: Annotated[ConsoleState, Depends(get_state)]) -> Iterator[Session]:
    with state.store.session() as session:
        yield session


def current_staff(
    request: Request,
    state: Annotated[ConsoleState, Depends(get_state)],
    db: Annotated[Session, Depends(get_db)],
    # Declared for the OpenAPI description; the Guard reads the request, so that the session cookie works too.
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
) -> Caller:
    return state.guard.require(request, db)


def it_admin(staff: Annotated[Caller, Depends(current_staff)]) -> Caller:
    return require_role(staff, "it-admin")


Db = Annotated[Session, Depends(get_db)]
State = Annotated[ConsoleState, Depends(get_state)]
CurrentStaff = Annotated[Caller, Depends(current_staff)]
ItAdmin = Annotated[Caller, Depends(it_admin)]


record = log_action  # node/console/twins.py and the routers log through it
