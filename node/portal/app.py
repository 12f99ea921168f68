"""The portal application: `create_app(settings)`; errors become 4xx/503 answers with a readable `detail`."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.ledger import ChainUnavailable, ContractRejected, Ledger, LedgerError
from federation.web import add_security_headers
from node.portal.accounts import PortalError
from node.portal.deps import PortalState
from node.portal.routers import changes, enrolment, pages, session, staff, studies
from node.portal.settings import PortalSettings

# The portal's pages carry no inline images, so its policy is stricter than the consoles' (no data: images).
PORTAL_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
}

log = logging.getLogger("twinledger.portal")


def create_app(settings: PortalSettings, *, ledger: Ledger | None = None) -> FastAPI:
    # No /docs or /redoc: they load scripts from a CDN, which the CSP forbids; /openapi.json describes the API.
    app = FastAPI(title=f"TwinLedger patient portal ({settings.node.hospital})", version="1", docs_url=None, redoc_url=None)
    app.state.portal = PortalState(settings, ledger=ledger)
    app.state.portal.relayer.forget_interrupted()  # one server per node home (docs/portal.md)
    for module in (staff, enrolment, session, studies, changes, pages):
        app.include_router(module.router)

    def answer(request: Request, message: str, status: int, headers: dict | None = None):
        """JSON under /api, an HTML page elsewhere (a page that needs a login sends the browser there)."""
        if request.url.path.startswith("/api"):
            return JSONResponse({"detail": message}, status_code=status, headers=headers)
        if status == 401:
            return RedirectResponse("/login", status_code=303)
        return pages.error_page(request, settings, message, status)

    @app.exception_handler(PortalError)
    async def portal_error(request: Request, exc: PortalError):
        return answer(request, str(exc), exc.status, exc.headers)

    @app.exception_handler(ContractRejected)
    async def rejected(request: Request, exc: ContractRejected):
        return answer(request, f"the ledger refused: {exc}", 409)

    @app.exception_handler(ChainUnavailable)
    async def unavailable(request: Request, exc: ChainUnavailable):
        log.warning("chain unavailable: %s", exc)
        return answer(request, "the consent ledger cannot be reached: try again later", 503)

    @app.exception_handler(LedgerError)
    async def ledger_error(request: Request, exc: LedgerError):
        log.warning("ledger error: %s", exc)
        return answer(request, "the consent ledger could not answer: try again later", 503)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        error = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "the request is malformed"}
        message = f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
        if request.url.path.startswith("/api"):
            # One readable sentence in `detail`, every error in `errors` (FastAPI's own list).
            errors = json.loads((await request_validation_exception_handler(request, exc)).body)["detail"]
            return JSONResponse({"detail": message, "errors": errors}, status_code=422)
        return answer(request, message, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if request.url.path.startswith("/api"):
            return await http_exception_handler(request, exc)
        return answer(request, str(exc.detail), exc.status_code)

    add_security_headers(app, PORTAL_HEADERS)

    return app


def app_from_home(home: str) -> FastAPI:
    """For uvicorn: `create_app(PortalSettings.load(home))`."""
    return create_app(PortalSettings.load(home))
