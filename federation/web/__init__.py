"""The web kit of TwinLedger's three web apps (the patient portal, the hospital IT console, the operator
console): one app factory (`app.create_web_app`), one error model (`errors`), one caller and session check
(`sessions.Guard`, `sessions.Caller`), the schemas they share (`schemas`), role tokens, login sessions with CSRF
tokens, the action log (`auth`, `models`) and one stylesheet; /healthz, /readyz and /metrics without a login
(`probes`, each app passing its readiness checks to the factory).

    app = create_web_app(title, static_dir=..., error_page=..., chain_name="the consent ledger")   # app.py
    raise WebError("no such study", status=404)       # answered as a Problem under /api, the error page elsewhere
    guard = Guard(cookie_name=..., idle_s=900, roles=ROLES); caller = guard.require(request, db)   # sessions.py

    from federation.web import auth, models
    token = auth.create_token(db, name="alice", role="operator")   # shown once; only its hash is stored
    found = auth.token_holder(db, token)                            # AccessToken or None
    opened = auth.open_session(db, found, ttl_s=3600)               # cookie token + CSRF token
    auth.live_session(db, WebSession, cookie_token, idle_s=900)     # the live session row or None
    auth.record(db, actor="alice", action="study.create", target="0x…", outcome="ok")

Tables live in whatever database the console uses (call ``models.create_tables(engine)``).
"""

from pathlib import Path

from federation.web.errors import WebError

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


def add_security_headers(app, headers: dict[str, str] = SECURITY_HEADERS) -> None:
    """Give every response of `app` these headers, unless the route set its own."""
    app.add_middleware(SecurityHeaders, headers=headers)


class SecurityHeaders:
    """ASGI middleware adding headers to each response's start. Plain ASGI rather than `@app.middleware("http")`
    (Starlette's BaseHTTPMiddleware), which runs every request through a task and a stream of its own: a tenth of
    the portal's CPU per request under a burst."""

    def __init__(self, app, *, headers: dict[str, str]):
        self.app = app
        self.headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                message["headers"] = [*message.get("headers", ()),
                                      *((name, value) for name, value in self.headers if name not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def read_form(request, *, max_bytes: int, max_fields: int, refuse=WebError) -> dict[str, list[str]]:
    """A urlencoded form's fields (every value of each), or `refuse(message, status=...)` raised: 415, 413 (as soon
    as the body passes `max_bytes`, while it streams in), 400."""
    from urllib.parse import parse_qs

    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise refuse("send the form as application/x-www-form-urlencoded", status=415)
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > max_bytes:
        raise refuse("the form is too large", status=413)  # refused before a byte of it is read
    body = bytearray()
    async for chunk in request.stream():  # counted as it arrives: a lying or absent Content-Length changes nothing
        body += chunk
        if len(body) > max_bytes:
            raise refuse("the form is too large", status=413)
    try:
        return parse_qs(bytes(body).decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise refuse("the form could not be read", status=400) from None
