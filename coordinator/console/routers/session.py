"""POST/GET/DELETE /api/session (exchange a token for a session cookie) and GET /api/me."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from coordinator.console.deps import ApiCaller, ConsoleError, ConsoleState, Db, State, client_ip
from coordinator.console.schemas import COMMON, answers, LoginRequest, MeOut, Message, SessionOut
from federation.web import auth
from federation.web.models import AccessToken

router = APIRouter(prefix="/api", tags=["session"], responses=answers(*COMMON, 429))


def log_in(state: ConsoleState, db, request: Request, token: str) -> tuple[AccessToken, auth.OpenedSession]:
    """Check a token (rate-limited per client address, failures logged) and open a session for its holder."""
    settings, client = state.settings, client_ip(request)
    if auth.recent_failures(db, client=client, window_s=settings.login_window_s) >= settings.max_login_failures_per_client:
        auth.record(db, actor="anonymous", action="login", outcome="refused", detail="too many failed logins", client=client)
        raise ConsoleError("too many failed logins from your address: wait a quarter of an hour", status=429,
                           headers={"Retry-After": str(settings.login_window_s)})
    holder = auth.token_holder(db, token.strip())
    if holder is None:
        auth.record(db, actor="anonymous", action="login", outcome="failed", detail="unknown or revoked token",
                    client=client)
        raise ConsoleError("this token is not valid (unknown or revoked)", status=401)
    opened = auth.open_session(db, holder, ttl_s=settings.session_ttl_s)
    auth.record(db, actor=holder.name, role=holder.role, action="login", client=client)
    return holder, opened


def set_cookie(response: Response, state: ConsoleState, opened: auth.OpenedSession) -> None:
    settings = state.settings
    response.set_cookie(settings.cookie_name, opened.cookie_token, max_age=settings.session_ttl_s, httponly=True,
                        samesite="strict", secure=settings.cookie_secure, path="/")


def clear_cookie(response: Response, state: ConsoleState) -> None:
    settings = state.settings
    response.delete_cookie(settings.cookie_name, path="/", httponly=True, samesite="strict", secure=settings.cookie_secure)


@router.post("/session", response_model=SessionOut, status_code=201)
def login(body: LoginRequest, request: Request, response: Response, db: Db, state: State) -> SessionOut:
    holder, opened = log_in(state, db, request, body.token)
    set_cookie(response, state, opened)
    return SessionOut(name=holder.name, role=holder.role, csrf_token=opened.csrf_token, expires_at=opened.expires_at)


@router.get("/session", response_model=SessionOut)
def current(caller: ApiCaller) -> SessionOut:
    if caller.session is None:
        raise ConsoleError("a Bearer token has no session: log in with POST /api/session", status=404)
    return SessionOut(name=caller.name, role=caller.role, csrf_token=caller.session.csrf_token,
                      expires_at=caller.session.expires_at)


@router.delete("/session", response_model=Message)
def logout(caller: ApiCaller, request: Request, response: Response, db: Db, state: State) -> Message:
    if caller.session is not None:
        auth.close_session(db, caller.session)
    clear_cookie(response, state)
    auth.record(db, actor=caller.name, role=caller.role, action="logout", client=client_ip(request))
    return Message(detail="logged out")


@router.get("/me", response_model=MeOut)
def me(caller: ApiCaller) -> MeOut:
    return MeOut(name=caller.name, role=caller.role, can_operate=caller.role == "operator")
