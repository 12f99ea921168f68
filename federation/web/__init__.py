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
