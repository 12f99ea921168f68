"""Dependencies: state, database session, ledgers, the caller (Bearer token or session cookie), roles, CSRF."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session, create_engine

from contracts.ledger import Ledger, LedgerError
from coordinator.console.models import create_tables
from coordinator.console.runs import RunManager
from coordinator.console.settings import ConsoleSettings
from federation.web import ConsoleError, auth
from federation.web.models import AccessToken, WebSession


class ConsoleState:
    """What the application holds: settings, the database, the ledger clients, the runs it launched."""

    def __init__(self, settings: ConsoleSettings, *, reader: Ledger | None = None, operator: Ledger | None = None):
        self.settings = settings
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
                raise ConsoleError(f"the console has no operator key at {self.settings.operator_key}: "
                                   "put the consortium operator's key there to create studies", status=409)
            self._operator = self._open(key=True)
        return self._operator

    def _open(self, *, key: bool) -> Ledger:
        coordinator = self.settings.coordinator
        if coordinator.deployment_file is None:
            raise LedgerError("the coordinator has no deployment file configured (coordinator.toml deployment-file)")
        return Ledger.open(coordinator.rpc_url, coordinator.deployment_file,
                           key_path=self.settings.operator_key if key else None, timeout_s=coordinator.chain_timeout_s)

    def session(self) -> Session:
        return Session(self.engine)


def get_state(request: Request) -> ConsoleState:
    return request.app.state.console


def get_db(state: Annotated[ConsoleState, Depends(get_state)]) -> Iterator[Session]:
    with state.session() as session:
        yield session


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@dataclass
class Caller:
    holder: AccessToken
    session: WebSession | None  # None when the request carried a Bearer token

    @property
    def name(self) -> str:
        return self.holder.name

    @property
    def role(self) -> str:
        return self.holder.role


def identify(request: Request, db: Session, settings: ConsoleSettings) -> Caller | None:
    """The caller of a request: Bearer token first, else the session cookie; None if neither is valid."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        holder = auth.token_holder(db, token.strip())
        return Caller(holder, None) if holder else None
    found = auth.session_for(db, request.cookies.get(settings.cookie_name), idle_s=settings.session_idle_s)
    return Caller(found[1], found[0]) if found else None


def api_caller(request: Request, db: Annotated[Session, Depends(get_db)],
               state: Annotated[ConsoleState, Depends(get_state)]) -> Caller:
    caller = identify(request, db, state.settings)
    if caller is None:
        raise ConsoleError("not authenticated: send Authorization: Bearer <token> or log in", status=401,
                           headers={"WWW-Authenticate": "Bearer"})
    if caller.session is not None and request.method not in ("GET", "HEAD", "OPTIONS"):
        if not auth.csrf_ok(request.headers.get("x-csrf-token"), caller.session):
            raise ConsoleError("missing or wrong CSRF token (send the X-CSRF-Token header)", status=403)
    return caller


def require_operator_role(caller: Caller, db: Session, request: Request, action: str) -> None:
    """Refuse (and log) an operator-only action of an observer."""
    if caller.role != "operator":
        auth.record(db, actor=caller.name, role=caller.role, action=action, target=request.url.path,
                    outcome="refused", detail="the operator role is needed", client=client_ip(request))
        raise ConsoleError(f"{caller.name} has the role {caller.role!r}; this needs the role 'operator'", status=403)


def api_operator(request: Request, caller: Annotated[Caller, Depends(api_caller)],
                 db: Annotated[Session, Depends(get_db)]) -> Caller:
    require_operator_role(caller, db, request, "forbidden")
    return caller


Db = Annotated[Session, Depends(get_db)]
State = Annotated[ConsoleState, Depends(get_state)]
ApiCaller = Annotated[Caller, Depends(api_caller)]
ApiOperator = Annotated[Caller, Depends(api_operator)]
