"""The patient portal: `create_app(settings)` over the web kit's factory (federation.web.app), so errors answer
as in every TwinLedger web app (a Problem under /api, the error page elsewhere); patients are not shown a ledger
error's internals."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlmodel import func, select

from contracts.ledger import Ledger
from federation import monitoring
from federation.web import SECURITY_HEADERS, probes
from federation.web.app import create_web_app
from federation.web.errors import WebError
from node.portal.accounts import PortalError
from node.portal.deps import PortalState
from node.portal.models import ConsentRelay
from node.portal.routers import changes, enrolment, pages, session, staff, studies, withdrawals
from node.portal.settings import PortalSettings

log = logging.getLogger("twinledger.portal")
STATIC = Path(__file__).resolve().parent / "static"
# The portal's pages carry no inline images, so its policy is stricter than the consoles' (no data: images).
PORTAL_HEADERS = SECURITY_HEADERS | {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'"}


def create_app(settings: PortalSettings, *, ledger: Ledger | None = None) -> FastAPI:
    app = create_web_app(f"TwinLedger patient portal ({settings.node.hospital})", static_dir=STATIC,
                         error_page=lambda request, message, status: pages.error_page(request, settings, message, status),
                         chain_name="the consent ledger", headers=PORTAL_HEADERS, explain_ledger_errors=False,
                         trusted_proxies=settings.trusted_proxies,
                         readiness=lambda: readiness(app.state.portal),
                         before_scrape=lambda: count_relays_pending(app.state.portal))
    app.state.portal = PortalState(settings, ledger=ledger)
    relayer = app.state.portal.relayer
    if relayer.resume():  # one server per node home (docs/portal.md): its outbox is this server's to send
        relayer.start()
    app.router.lifespan_context = _stopping_relayer(app.router.lifespan_context, app.state.portal)
    app.add_exception_handler(OperationalError, _database_busy)
    app.add_exception_handler(SQLAlchemyTimeoutError, _database_busy)
    for module in (staff, enrolment, session, studies, withdrawals, changes, pages):
        app.include_router(module.router)
    return app


def readiness(state: PortalState) -> probes.Checks:
    """/readyz's checks: the chain (with the contracts) the portal relays to, its database accepts writes, and the
    keys it enrols and relays with."""
    node = state.settings.node
    return {
        "chain": lambda: probes.chain_ready(lambda: state.ledger),
        "database": lambda: probes.database_writable(state.store.engine),
        "keys": lambda: probes.key_files({"data key": node.data_key_file, "hospital key": node.hospital_key_file}),
    }


def count_relays_pending(state: PortalState) -> None:
    """The outbox's changes still to send, for the twinledger_relays_pending gauge (read at each scrape)."""
    with state.store.session() as db:
        monitoring.relays_pending(db.exec(select(func.count()).select_from(ConsentRelay)
                                       .where(ConsentRelay.status == "sent")).one())


async def _database_busy(request: Request, exc: Exception):
    """The database stayed locked (or its pool empty) past its timeout: a 503 the patient can act on, never a 500."""
    log.warning("database busy: %s", exc)
    busy = PortalError("the portal is busy: nothing was changed, try again in a minute", status=503,
                       headers={"Retry-After": "60"})
    return await request.app.exception_handlers[WebError](request, busy)  # answered as every refusal is


def _stopping_relayer(lifespan, portal: PortalState):
    """The app's lifespan: at the server's start the ledger is opened (in the background), and at its stop the
    worker finishes the batch it is sending (what it has not sent stays in the outbox for the next start)."""

    @asynccontextmanager
    async def lifespan_then_stop(app):
        portal.open_ledger_early()
        async with lifespan(app) as state:
            yield state
        await run_in_threadpool(portal.relayer.shutdown)

    return lifespan_then_stop


def app_from_home(home: str) -> FastAPI:
    """For uvicorn: `create_app(PortalSettings.load(home))`."""
    return create_app(PortalSettings.load(home))
