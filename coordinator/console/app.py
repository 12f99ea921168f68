"""The operator console: `create_app(settings)` over the web kit's factory (federation.web.app), so errors
answer as in every TwinLedger web app (a Problem under /api, the error page elsewhere)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from contracts.ledger import Ledger
from coordinator.console.deps import ConsoleState
from coordinator.console.routers import activity, pages, runs, session, studies
from coordinator.console.runs import RunError
from coordinator.console.settings import ConsoleSettings
from federation.web import probes
from federation.web.app import create_web_app

STATIC = Path(__file__).resolve().parent / "static"


def create_app(settings: ConsoleSettings, *, reader: Ledger | None = None, operator: Ledger | None = None) -> FastAPI:
    app = create_web_app("TwinLedger operator console", static_dir=STATIC, error_page=pages.error_page,
                         chain_name="the consortium's chain", refusals=(RunError,),
                         trusted_proxies=settings.trusted_proxies, readiness=lambda: readiness(app.state.console))
    app.state.console = ConsoleState(settings, reader=reader, operator=operator)
    for module in (session, studies, runs, activity, pages):
        app.include_router(module.router)
    return app


def readiness(state: ConsoleState) -> probes.Checks:
    """/readyz's checks: the chain (with the contracts), the console's database accepts writes, the operator key
    (when one is configured) is readable, and the SuperLink's Control API accepts connections (runs go there)."""
    return {
        "chain": lambda: probes.chain_ready(lambda: state.reader),
        "database": lambda: probes.database_writable(state.engine),
        "keys": lambda: probes.key_files({"operator key": state.settings.operator_key}, optional={"operator key"}),
        "superlink": lambda: probes.reachable(state.settings.superlink, timeout_s=3.0, what="the SuperLink"),
    }
