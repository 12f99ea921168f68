"""Log in with a console token (a session cookie and a CSRF token), who am I, log out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from federation.web import auth
from node.console.deps import ConsoleError, CurrentStaff, Db, State, client_ip, record
from node.console.schemas import LoginRequest, Message, SessionOut, WhoAmI, errors
from node.console.settings import ROLES

router = APIRouter(prefix="/api", tags=["session"])


def login(db, state, *, token: str, client: str) -> tuple[auth.AccessToken, auth.OpenedSession]:
    settings = state.settings
    if auth.recent_failures(db, client=client, window_s=settings.login_window_s) >= settings.max_login_failures_per_ip:
        raise ConsoleError(f"too many failed logins from {client}: try again in {settings.login_window_s // 60} minutes",
                           status=429, headers={"Retry-After": str(settings.login_window_s)})
    holder = auth.token_holder(db, token.strip())
    if holder is None or holder.role not in ROLES:
        auth.record(db, actor="anonymous", action="login", outcome="refused", detail="unknown or revoked token",
                    client=client)
        raise ConsoleError("this token is unknown or revoked", status=401)
    opened = auth.open_session(db, holder, ttl_s=settings.session_ttl_s)
    auth.record(db, actor=holder.name, role=holder.role, action="login", client=client)
    return holder, opened


def set_cookie(response: Response, state, opened: auth.OpenedSession) -> None:
    settings = state.settings
    response.set_cookie(settings.cookie_name, opened.cookie_token, max_age=settings.session_ttl_s, httponly=True,
                        samesite="strict", secure=settings.cookie_secure, path="/")


@router.post("/session", response_model=SessionOut, status_code=201, responses=errors(401, 422, 429))
def open_session(body: LoginRequest, request: Request, response: Response, db: Db, state: State) -> SessionOut:
    holder, opened = login(db, state, token=body.token, client=client_ip(request))
    set_cookie(response, state, opened)
    return SessionOut(name=holder.name, role=holder.role, csrf_token=opened.csrf_token, expires_at=opened.expires_at)


@router.get("/session", response_model=WhoAmI, responses=errors(401))
def who_am_i(staff: CurrentStaff) -> WhoAmI:
    return WhoAmI(name=staff.name, role=staff.role)


@router.delete("/session", response_model=Message, responses=errors(401, 403))
def close_session(staff: CurrentStaff, response: Response, db: Db, state: State) -> Message:
    if staff.session is not None:
        auth.close_session(db, staff.session)
    record(db, staff, "logout")
    response.delete_cookie(state.settings.cookie_name, path="/", httponly=True, samesite="strict",
                           secure=state.settings.cookie_secure)
    return Message(detail="logged out")
