"""Body limits enforced while the body streams in, for every request of a web app (forms, JSON, uploads alike):
an ASGI middleware the app factory installs. A body is refused with 413 as soon as its declared length or the
bytes received so far pass the limit of its path, before the rest is read: a lying or absent Content-Length
changes nothing. Nothing is buffered here; the limit only counts.

    app.add_middleware(BodyLimit, max_bytes=256 * 1024, limits={"/api/imports": 20 * 1024 * 1024})
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from federation.web.errors import WebError

DEFAULT_MAX_BODY_BYTES = 256 * 1024  # the largest JSON body any of the apps' APIs needs is a few KiB


class BodyTooLarge(WebError, StarletteHTTPException):
    """Raised from `receive` when a body passes its limit. A WebError, so the app answers it in its error model
    (a Problem under /api, the error page elsewhere); a Starlette HTTPException too, so that FastAPI's JSON
    body reader passes it on instead of turning it into a 400."""

    def __init__(self, limit: int):
        message = f"the request body is larger than {describe(limit)}"
        StarletteHTTPException.__init__(self, 413, message)  # (WebError's __init__ would reach this one by super())
        self.status, self.code, self.headers, self.limit = 413, "content_too_large", {}, limit

    def __str__(self) -> str:
        return self.detail


def describe(limit: int) -> str:
    if limit >= 1024 * 1024 and limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    if limit >= 1024 and limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"


class BodyLimit:
    """ASGI middleware: at most `max_bytes` of body per request, or `limits[path]` for the paths given."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 limits: Mapping[str, int] | None = None):
        self.app, self.max_bytes, self.limits = app, max_bytes, dict(limits or {})

    def limit_of(self, path: str) -> int:
        return self.limits.get(path.rstrip("/") or "/", self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope.get("path", "/"))
        declared = next((value for name, value in scope.get("headers", ()) if name == b"content-length"), None)
        too_large_declared = declared is not None and (not declared.strip().isdigit() or int(declared) > limit)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if too_large_declared:
                raise BodyTooLarge(limit)  # before a single byte is read
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)
