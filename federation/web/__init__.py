"""What every TwinLedger web console shares: role tokens, login sessions with CSRF tokens, the action log
and one stylesheet. The coordinator's operator console and the hospital node console both build on it.

    from federation.web import auth, models
    token = auth.create_token(db, name="alice", role="operator")   # shown once; only its hash is stored
    found = auth.token_holder(db, token)                            # AccessToken or None
    opened = auth.open_session(db, found, ttl_s=3600)               # cookie token + CSRF token
    auth.session_for(db, cookie_token, idle_s=900)                  # (WebSession, AccessToken) or None
    auth.record(db, actor="alice", action="study.create", target="0x…", outcome="ok")

Tables live in whatever database the console uses (call ``models.create_tables(engine)``).
"""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
STYLESHEET = STATIC_DIR / "web.css"  # serve it at /static/web.css; templates link it with no CDN
# For every console response: nothing from other origins, no framing, no sniffing, no caching.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class ConsoleError(Exception):
    """A request a web app refuses; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 400, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def add_security_headers(app, headers: dict[str, str] = SECURITY_HEADERS) -> None:
    """Give every response of `app` these headers, unless the route set its own."""

    @app.middleware("http")
    async def security_headers(request, call_next):
        response = await call_next(request)
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response


async def read_form(request, *, max_bytes: int, max_fields: int, refuse=ConsoleError) -> dict[str, list[str]]:
    """A urlencoded form's fields (every value of each), or `refuse(message, status=...)` raised: 415, 413, 400."""
    from urllib.parse import parse_qs

    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise refuse("send the form as application/x-www-form-urlencoded", status=415)
    body = await request.body()
    if len(body) > max_bytes:
        raise refuse("the form is too large", status=413)
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise refuse("the form could not be read", status=400) from None
