"""The patient portal: `create_app(settings)` over the web kit's factory (federation.web.app), so errors answer
as in every TwinLedger web app (a Problem under /api, the error page elsewhere); patients are not shown a ledger
error's internals."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from contracts.ledger import Ledger
from federation.web import SECURITY_HEADERS
from federation.web.app import create_web_app
from node.portal.deps import PortalState
from node.portal.routers import changes, enrolment, pages, session, staff, studies
from node.portal.settings import PortalSettings

STATIC = Path(__file__).resolve().parent / "static"
# The portal's pages carry no inline images, so its policy is stricter than the consoles' (no data: images).
PORTAL_HEADERS = SECURITY_HEADERS | {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'"}


def create_app(settings: PortalSettings, *, ledger: Ledger | None = None) -> FastAPI:
    app = create_web_app(f"TwinLedger patient portal ({settings.node.hospital})", static_dir=STATIC,
                         error_page=lambda request, message, status: pages.error_page(request, settings, message, status),
                         chain_name="the consent ledger", headers=PORTAL_HEADERS, explain_ledger_errors=False,
                         trusted_proxies=settings.trusted_proxies)
    app.state.portal = PortalState(settings, ledger=ledger)
    app.state.portal.relayer.forget_interrupted()  # one server per node home (docs/portal.md)
    for module in (staff, enrolment, session, studies, changes, pages):
        app.include_router(module.router)
    return app


def app_from_home(home: str) -> FastAPI:
    """For uvicorn: `create_app(PortalSettings.load(home))`."""
    return create_app(PortalSettings.load(home))
