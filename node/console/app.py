"""The console application: `create_app(settings)`. Errors become 4xx/503 answers with a readable `detail`
(JSON under /api, a page elsewhere)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.ledger import Ledger
from federation.web import STYLESHEET, add_security_headers
from node.console.deps import ConsoleError, ConsoleState
from node.console.routers import actions, enrolment, health, pages, patients, session, studies
from node.console.settings import ConsoleSettings
from node.console.twins import pages_router as twin_pages
from node.console.twins import twins_api

log = logging.getLogger("twinledger.console")
STATIC = Path(__file__).resolve().parent / "static"

# The console's JSON API, by resource. Further routers join here or through `create_app(routers=...)`.
# The twins' API (node/console/twins.py, /api/twins/...) needs the app's state and joins in create_app.
API_ROUTERS: list[APIRouter] = [session.router, health.router, patients.router, enrolment.router, studies.router,
                                actions.router]


def create_app(settings: ConsoleSettings, *, ledger: Ledger | None = None,
               routers: Iterable[APIRouter] = ()) -> FastAPI:
    # No /docs or /redoc: they load scripts from a CDN, which the CSP forbids; /openapi.json describes the API.
    app = FastAPI(title=f"TwinLedger node console ({settings.node.hospital})", version="1", docs_url=None,
                  redoc_url=None)
    app.state.console = ConsoleState(settings, ledger=ledger)
    for router in [*API_ROUTERS, twins_api(app.state.console), *routers, twin_pages, pages.router]:
        app.include_router(router)

    @app.get("/static/web.css", include_in_schema=False)
    def shared_stylesheet() -> FileResponse:
        return FileResponse(STYLESHEET, media_type="text/css")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def answer(request: Request, message: str, status: int, headers: dict | None = None):
        if request.url.path.startswith("/api"):
            return JSONResponse({"detail": message}, status_code=status, headers=headers)
        if status == 401:
            return RedirectResponse("/login", status_code=303)
        return pages.error_page(request, message, status)

    @app.exception_handler(ConsoleError)
    async def console_error(request: Request, exc: ConsoleError):
        return answer(request, str(exc), exc.status, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # One readable sentence per problem, as every other error (the Problem model), not FastAPI's list.
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10]]
        return answer(request, "; ".join(problems) or "the request is malformed", 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if request.url.path.startswith("/api") or request.url.path.startswith("/static"):
            return await http_exception_handler(request, exc)
        return answer(request, str(exc.detail), exc.status_code)

    add_security_headers(app)

    return app


def app_from_home(home: str) -> FastAPI:
    """For uvicorn: `create_app(ConsoleSettings.load(home))`."""
    return create_app(ConsoleSettings.load(home))
