"""What the operator console holds (settings, database, ledgers, runs, its login Guard) and its dependencies,
declared once: `Db`, `State`, `ApiCaller` (any role), `ApiOperator`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlmodel import Session, create_engine

from contracts.ledger import Ledger, LedgerError
from coordinator.console.models import create_tables
from coordinator.console.runs import RunManager
from coordinator.console.settings import ROLES, ConsoleSettings
from federation.web.errors import WebError
from federation.web.sessions import BEARER, Caller, Guard, log_action, require_role


class ConsoleState:
    """What the application holds: settings, the database, the ledger clients, the runs it launched."""

    def __init__(self, settings: ConsoleSettings, *, reader: Ledger | None = None, operator: Ledger | None = None):
        self.settings = settings
        self.guard = Guard(cookie_name=settings.cookie_name, idle_s=settings.session_idle_s, roles=ROLES)
        settings.home.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(settings.database_url, connect_args={"check_same_thread": False})
        create_tables(self.engine)
        self.runs = RunManager(settings)
        self._reader, self._operator = reader, operator
        self.chain_lock = threading.Lock()  # one operator transaction at a time: nonces stay in order

    @property
    def reader(self) -> Ledger:
        if self._reader is None:
            self._reader = self._open(key=False)
        return self._reader

    @property
    def operator(self) -> Ledger:
        if self._operator is None:
            if not self.settings.operator_key.exists():
                raise WebError(f"the console has no operator key at {self.settings.operator_key}: "
                                   "put the consortium operator's key there to create studies", status=409)
            self._operator = self._open(key=True)
        return self._operator

    def _open(self, *, key: bool) -> Ledger:
        coordinator = self.settings.coordinator
        if coordinator.deployment_file is None:
            raise LedgerError("the coordinator has no deployment file configured (coordinator.toml deployment-file)")
        return Ledger.from_settings(coordinator, key_file=self.settings.operator_key if key else None)

    def session(self) -> Session:
        return Session(self.engine)


def get_state(request: Request) -> ConsoleState:
    return request.app.state.console


def get_db(state: Annotated[ConsoleState, Depends(get_state)]) -> Iterator[Session]:
    with state.session() as session:
        yield session


def current_caller(request: Request, db: Annotated[Session, Depends(get_db)],
                   state: Annotated[ConsoleState, Depends(get_state)],
                   bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None) -> Caller:
    return state.guard.require(request, db)


def require_operator_role(caller: Caller, db: Session, action: str, target: str = "") -> Caller:
    """Refuse (and log) an operator-only action of an observer."""
    if caller.role != "operator":
        log_action(db, caller, action, target=target, outcome="refused", detail="the operator role is needed")
    return require_role(caller, "operator")


def current_operator(request: Request, caller: Annotated[Caller, Depends(current_caller)],
                     db: Annotated[Session, Depends(get_db)]) -> Caller:
    return require_operator_role(caller, db, "forbidden", request.url.path)


Db = Annotated[Session, Depends(get_db)]
State = Annotated[ConsoleState, Depends(get_state)]
ApiCaller = Annotated[Caller, Depends(current_caller)]
ApiOperator = Annotated[Caller, Depends(current_operator)]
