"""Who makes a request, for all three web apps: one `Caller` (a console token's holder or a portal patient), found
by Bearer token or by session cookie, and one `Guard` that turns a request into its Caller (401 when there is
none, 403 for a missing CSRF token or a role the route does not allow). Each app declares its `Annotated`
dependencies once, in its deps.py, over its Guard.

    guard = Guard(cookie_name="tl_console", idle_s=900, roles=ROLES, bearer=True)
    caller = guard.identify(request, db)                # Caller or None, nothing raised
    caller = guard.require(request, db, form=None)      # 401 / 403 raised as WebError
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.security import HTTPBearer
from sqlmodel import Session

from federation.web import auth
from federation.web.clients import ClientAddress, client_address
from federation.web.errors import WebError

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Declared on the consoles' API routes for the OpenAPI description; the Guard itself reads the request, so that
# the session cookie works too.
BEARER = HTTPBearer(auto_error=False, scheme_name="console token",
                    description="a console token (twinledger ... console-token); browsers use the session cookie")


def client_ip(request: Request) -> ClientAddress:
    """The client's address (X-Forwarded-For believed only from a trusted proxy: federation.web.clients); its
    `real` is False when it is an undeclared proxy's address shared by many clients."""
    return client_address(request)


@dataclass
class Caller:
    """Who makes the request. `holder` is the row that names them (an AccessToken, a PortalAccount); `session`
    is the login session (None for a Bearer token); `client` is their address."""

    holder: Any
    session: Any | None
    client: str
    name: str
    role: str


# How an app finds the holder of a live session row: (db, session row) -> (holder, name, role) or None.
HolderOf = Callable[[Session, Any], "tuple[Any, str, str] | None"]
# Optionally, how it loads the holders of many rows with one query before `HolderOf` is asked for each.
HoldersOf = Callable[[Session, list], None]


def token_holder_of(db: Session, row) -> tuple[Any, str, str] | None:
    """The consoles' sessions belong to console tokens (federation.web.models.AccessToken)."""
    holder = db.get(auth.AccessToken, row.access_token_id)
    if holder is None or holder.revoked_at is not None:
        return None
    return holder, holder.name, holder.role


class Guard:
    """One app's login check: the session table and cookie, the idle time, the roles it admits and whether a
    console token may stand in for the cookie (`Authorization: Bearer ...`, scripts)."""

    def __init__(self, *, cookie_name: str, idle_s: int, roles: tuple[str, ...] | None = None, bearer: bool = True,
                 table=auth.WebSession, holder_of: HolderOf = token_holder_of, holders_of: HoldersOf | None = None,
                 not_logged_in: str = "not logged in: send Authorization: Bearer <token>, or log in again"):
        self.cookie_name, self.idle_s, self.roles, self.bearer = cookie_name, idle_s, roles, bearer
        self.table, self.holder_of, self.holders_of, self.not_logged_in = table, holder_of, holders_of, not_logged_in

    def identify(self, request: Request, db: Session, *, cookie_only: bool = False) -> Caller | None:
        """The caller of a request: a Bearer token first (unless `cookie_only`), else the session cookie."""
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if self.bearer and not cookie_only and scheme.lower() == "bearer" and token.strip():
            holder = auth.token_holder(db, token.strip())
            return self._admit(Caller(holder, None, client_ip(request), holder.name, holder.role) if holder else None)
        return self.callers(db, [request.cookies.get(self.cookie_name)], [client_ip(request)])[0]

    def callers(self, db: Session, cookies: list[str | None], clients: list[str]) -> list[Caller | None]:
        """The callers of many requests' session cookies, in order (None where there is none), from one query
        for the sessions and, with `holders_of`, one for their holders."""
        rows = auth.live_sessions(db, self.table, cookies, idle_s=self.idle_s)
        if self.holders_of is not None and rows:
            self.holders_of(db, list(rows.values()))
        held: dict[str, tuple] = {}  # cookie -> (holder, session row, name, role)
        for cookie, row in rows.items():
            found = self.holder_of(db, row)
            if found is None:
                auth.close_session(db, row)
                continue
            holder, name, role = found
            held[cookie] = (holder, row, name, role)
        callers = []
        for cookie, client in zip(cookies, clients):
            found = held.get(cookie or "")
            callers.append(self._admit(Caller(found[0], found[1], client, found[2], found[3]) if found else None))
        return callers

    def _admit(self, caller: Caller | None) -> Caller | None:
        return caller if caller and (self.roles is None or caller.role in self.roles) else None

    def require(self, request: Request, db: Session) -> Caller:
        """The caller of an API request, or WebError: 401 without a valid token or session, 403 when a request
        that changes something comes with a session cookie but without its X-CSRF-Token header."""
        return self.admit_api(self.identify(request, db), method=request.method,
                              csrf=request.headers.get("x-csrf-token"))

    def admit_api(self, caller: Caller | None, *, method: str, csrf: str | None) -> Caller:
        """`require`'s checks of a caller found already (`callers`): 401 for none, 403 for a change without the
        session's CSRF token."""
        if caller is None:
            raise WebError(self.not_logged_in, status=401,
                           headers={"WWW-Authenticate": "Bearer"} if self.bearer else None)
        if caller.session is not None and method not in SAFE_METHODS:
            if not auth.csrf_ok(csrf, caller.session):
                raise WebError("missing or wrong CSRF token (send the X-CSRF-Token header)", status=403, code="csrf")
        return caller

    def require_page(self, request: Request, db: Session, *, form_csrf: str | None = None) -> Caller:
        """The caller of a page (session cookie only; 401 sends the browser to /login). A posted form's
        `csrf_token` field must be the session's: pass it as `form_csrf` ("" when the form had none)."""
        return self.admit_page(self.identify(request, db, cookie_only=True), form_csrf=form_csrf)

    def admit_page(self, caller: Caller | None, *, form_csrf: str | None) -> Caller:
        """`require_page`'s checks of a caller found already (`callers`)."""
        if caller is None:
            raise WebError("your session has ended: log in again", status=401)
        if form_csrf is not None and not auth.csrf_ok(form_csrf, caller.session):
            raise WebError("this form is out of date or was not sent from here: reload the page and try again",
                           status=403, code="csrf")
        return caller


def require_role(caller: Caller, role: str) -> Caller:
    if caller.role != role:
        raise WebError(f"{caller.name} has the role {caller.role!r}; this needs {role!r} (only an {role} can do this)",
                       status=403,
                       code="role")
    return caller


def log_in_with_token(db: Session, *, token: str, client: str, roles: tuple[str, ...], ttl_s: int, max_failures: int,
                      window_s: int, wrong_token_outcome: str = "failed", log_blocked: bool = True,
                      ) -> tuple[auth.AccessToken, auth.OpenedSession]:
    """A console token exchanged for a session (rate-limited per client address; every failure logged). The
    caller sets the cookie (`set_session_cookie`). The node console logs a wrong token as "refused" and does
    not log a blocked attempt (`wrong_token_outcome="refused", log_blocked=False`); the operator console logs
    both, a wrong token as "failed" (their tests pin each log)."""
    # Only a real address is locked out: an undeclared proxy's address stands for every client behind it
    # (tokens are 256-bit random strings: the limit is a brake on noise, not what keeps them secret).
    real = getattr(client, "real", True)
    if real and auth.recent_failures(db, client=client, window_s=window_s) >= max_failures:
        if log_blocked:
            auth.record(db, actor="anonymous", action="login", outcome="refused", detail="too many failed logins",
                        client=client)
        raise WebError(f"too many failed logins from {client}: try again in {max(window_s // 60, 1)} minutes",
                       status=429, headers={"Retry-After": str(window_s)})
    holder = auth.token_holder(db, token.strip())
    if holder is None or holder.role not in roles:
        auth.record(db, actor="anonymous", action="login", outcome=wrong_token_outcome,
                    detail="unknown or revoked token", client=client)
        raise WebError("this token is not valid (unknown or revoked)", status=401)
    opened = auth.open_session(db, holder, ttl_s=ttl_s)
    auth.record(db, actor=holder.name, role=holder.role, action="login", client=client)
    return holder, opened


def log_action(db: Session, caller: Caller | None, action: str, *, target: str = "", outcome: str = "ok",
               detail: str = "", client: str = "") -> None:
    """One entry in the action log: who (token name and role, or "anonymous"), what, on what, how it ended."""
    auth.record(db, actor=caller.name if caller else "anonymous", role=caller.role if caller else "", action=action,
                target=target, outcome=outcome, detail=detail, client=caller.client if caller else client)


# ---- forms sent before a login (log in, enrol): a double-submit cookie stands in for the session's CSRF token ----

class FormToken:
    """The double-submit token of the forms a visitor sends before logging in: the page sets it in a cookie and
    in a hidden field, the POST must bring both back equal."""

    def __init__(self, cookie_name: str, *, path: str = "/"):
        self.cookie_name, self.path = cookie_name, path

    def current(self, request: Request) -> str:
        """The token this visitor's page carries (theirs, or a new one)."""
        return request.cookies.get(self.cookie_name) or auth.new_secret()

    def set(self, response: Response, token: str, *, secure: bool) -> Response:
        response.set_cookie(self.cookie_name, token, httponly=True, samesite="strict", secure=secure, path=self.path)
        return response

    def matches(self, request: Request, given: str | None) -> bool:
        expected = request.cookies.get(self.cookie_name, "")
        return bool(expected) and auth.same(given or "", expected)


def set_session_cookie(response: Response, *, name: str, value: str, ttl_s: int, secure: bool) -> None:
    response.set_cookie(name, value, max_age=ttl_s, httponly=True, samesite="strict", secure=secure, path="/")


def clear_session_cookie(response: Response, *, name: str, secure: bool) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="strict", secure=secure)
