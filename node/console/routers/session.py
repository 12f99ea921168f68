"""Log in with a console token (a session cookie and a CSRF token), who am I, log out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from federation.web import auth
from federation.web.sessions import clear_session_cookie, log_in_with_token, set_session_cookie
from node.console.deps import CurrentStaff, Db, State, client_ip, record
from node.console.schemas import LoginRequest, Message, SessionOut, WhoAmI, errors
from node.console.settings import ROLES

router = APIRouter(prefix="/api", tags=["session"])


def login(db, state, *, token: str, client: str) -> tuple[auth.AccessToken, auth.OpenedSession]:
    settings = state.settings
    return log_in_with_token(db, token=token, client=client, roles=ROLES, ttl_s=settings.session_ttl_s,
                             max_failures=settings.max_login_failures_per_ip, window_s=settings.login_window_s,
                             wrong_token_outcome="refused", log_blocked=False)


def set_cookie(response: Response, state, opened: auth.OpenedSession) -> None:
    settings = state.settings
    set_session_cookie(response, name=settings.cookie_name, value=opened.cookie_token, ttl_s=settings.session_ttl_s,
                       secure=settings.cookie_secure)


def clear_cookie(response: Response, state) -> None:
    clear_session_cookie(response, name=state.settings.cookie_name, secure=state.settings.cookie_secure)


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
    clear_cookie(response, state)
    return Message(detail="logged out")
