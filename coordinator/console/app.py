"""The console application: `create_app(settings)`; errors become 4xx/503 answers with a readable `detail`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.ledger import ChainUnavailable, ContractRejected, Ledger, LedgerError
from coordinator.console.deps import ConsoleError, ConsoleState
from coordinator.console.routers import activity, pages, runs, session, studies
from coordinator.console.runs import RunError
from coordinator.console.settings import ConsoleSettings
from coordinator.console.studies import StudyError
from federation.web import add_security_headers

log = logging.getLogger("twinledger.console")


def create_app(settings: ConsoleSettings, *, reader: Ledger | None = None, operator: Ledger | None = None) -> FastAPI:
    # No /docs or /redoc: they load scripts from a CDN, which the CSP forbids; /openapi.json describes the API.
    app = FastAPI(title="TwinLedger operator console", version="1", docs_url=None, redoc_url=None)
    app.state.console = ConsoleState(settings, reader=reader, operator=operator)
    for module in (session, studies, runs, activity, pages):
        app.include_router(module.router)

    def answer(request: Request, message: str, status: int, headers: dict | None = None):
        """JSON under /api, an HTML page elsewhere (a page that needs a login sends the browser there)."""
        if request.url.path.startswith("/api"):
            return JSONResponse({"detail": message}, status_code=status, headers=headers)
        if status == 401:
            return RedirectResponse("/login", status_code=303)
        return pages.error_page(request, message, status)

    @app.exception_handler(ConsoleError)
    async def console_error(request: Request, exc: ConsoleError):
        return answer(request, str(exc), exc.status, exc.headers)

    @app.exception_handler(StudyError)
    async def study_error(request: Request, exc: StudyError):
        return answer(request, str(exc), exc.status)

    @app.exception_handler(RunError)
    async def run_error(request: Request, exc: RunError):
        return answer(request, str(exc), exc.status)

    @app.exception_handler(ContractRejected)
    async def rejected(request: Request, exc: ContractRejected):
        status = 404 if exc.error_name == "UnknownStudy" else 409
        return answer(request, f"the ledger refused: {exc}", status)

    @app.exception_handler(ChainUnavailable)
    async def unavailable(request: Request, exc: ChainUnavailable):
        log.warning("chain unavailable: %s", exc)
        return answer(request, "the consortium's chain cannot be reached: try again later", 503)

    @app.exception_handler(LedgerError)
    async def ledger_error(request: Request, exc: LedgerError):
        log.warning("ledger error: %s", exc)
        return answer(request, f"the consortium's chain could not answer: {exc}", 503)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        if request.url.path.startswith("/api"):
            return await request_validation_exception_handler(request, exc)
        error = exc.errors()[0]
        return answer(request, f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}", 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if request.url.path.startswith("/api"):
            return await http_exception_handler(request, exc)
        return answer(request, str(exc.detail), exc.status_code)

    add_security_headers(app)

    return app
