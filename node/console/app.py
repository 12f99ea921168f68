"""The hospital IT console: `create_app(settings)` over the web kit's factory (federation.web.app), so errors
answer as in every TwinLedger web app (a Problem under /api, the error page elsewhere)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fastapi import APIRouter, FastAPI

from contracts.ledger import Ledger
from federation.web.app import create_web_app
from node.console.deps import ConsoleState
from node.console.health import readiness
from node.console.routers import actions, enrolment, health, pages, patients, session, studies
from node.console.settings import ConsoleSettings
from node.console.twins import pages_router as twin_pages
from node.console.twins import twins_api

STATIC = Path(__file__).resolve().parent / "static"

# The console's JSON API, by resource. Further routers join here or through `create_app(routers=...)`.
# The twins' API (node/console/twins.py, /api/twins/...) needs the app's state and joins in create_app.
API_ROUTERS: list[APIRouter] = [session.router, health.router, patients.router, enrolment.router, studies.router,
                                actions.router]


def create_app(settings: ConsoleSettings, *, ledger: Ledger | None = None,
               routers: Iterable[APIRouter] = ()) -> FastAPI:
    app = create_web_app(f"TwinLedger node console ({settings.node.hospital})", static_dir=STATIC,
                         error_page=pages.error_page, chain_name="the consent ledger",
                         body_limits={"/api/imports": settings.max_upload_bytes},
                         trusted_proxies=settings.trusted_proxies,
                         readiness=lambda: readiness(app.state.console))
    app.state.console = ConsoleState(settings, ledger=ledger)
    for router in [*API_ROUTERS, twins_api(app.state.console), *routers, twin_pages, pages.router]:
        app.include_router(router)
    return app


def app_from_home(home: str) -> FastAPI:
    """For uvicorn: `create_app(ConsoleSettings.load(home))`."""
    return create_app(ConsoleSettings.load(home))
