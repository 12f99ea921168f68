"""POST/GET/DELETE /api/session (exchange a token for a session cookie) and GET /api/me."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from coordinator.console.deps import ApiCaller, ConsoleState, Db, State
from coordinator.console.schemas import COMMON, answers, LoginRequest, MeOut, Message, SessionOut
from coordinator.console.settings import ROLES
from federation.web import auth
from federation.web.errors import WebError
from federation.web.models import AccessToken
from federation.web.sessions import client_ip, clear_session_cookie, log_action, log_in_with_token, set_session_cookie

router = APIRouter(prefix="/api", tags=["session"], responses=answers(*COMMON, 429))


def log_in(state: ConsoleState, db, client: str, token: str) -> tuple[AccessToken, auth.OpenedSession]:
    """Check a token (rate-limited per client address, failures logged) and open a session for its holder."""
    settings = state.settings
    return log_in_with_token(db, token=token, client=client, roles=ROLES, ttl_s=settings.session_ttl_s,
                             max_failures=settings.max_login_failures_per_client, window_s=settings.login_window_s)


def set_cookie(response: Response, state: ConsoleState, opened: auth.OpenedSession) -> None:
    settings = state.settings
    set_session_cookie(response, name=settings.cookie_name, value=opened.cookie_token, ttl_s=settings.session_ttl_s,
                       secure=settings.cookie_secure)


def clear_cookie(response: Response, state: ConsoleState) -> None:
    clear_session_cookie(response, name=state.settings.cookie_name, secure=state.settings.cookie_secure)


@router.post("/session", response_model=SessionOut, status_code=201)
def login(body: LoginRequest, request: Request, response: Response, db: Db, state: State) -> SessionOut:
    holder, opened = log_in(state, db, client_ip(request), body.token)
    set_cookie(response, state, opened)
    return SessionOut(name=holder.name, role=holder.role, csrf_token=opened.csrf_token, expires_at=opened.expires_at)


@router.get("/session", response_model=SessionOut)
def current(caller: ApiCaller) -> SessionOut:
    if caller.session is None:
        raise WebError("a Bearer token has no session: log in with POST /api/session", status=404)
    return SessionOut(name=caller.name, role=caller.role, csrf_token=caller.session.csrf_token,
                      expires_at=caller.session.expires_at)


@router.delete("/session", response_model=Message)
def logout(caller: ApiCaller, response: Response, db: Db, state: State) -> Message:
    if caller.session is not None:
        auth.close_session(db, caller.session)
    clear_cookie(response, state)
    log_action(db, caller, "logout")
    return Message(detail="logged out")


@router.get("/me", response_model=MeOut)
def me(caller: ApiCaller) -> MeOut:
    return MeOut(name=caller.name, role=caller.role, can_operate=caller.role == "operator")
