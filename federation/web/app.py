"""The one app factory of the three web apps: a FastAPI app with the security headers, the shared stylesheet
at /static/web.css, the app's own static files at /static, and the one error model (federation.web.errors);
and their templates, over the one page layout (templates/web/page.html). Every app also answers /healthz,
/readyz (its `readiness` checks) and /metrics without a login (federation/web/probes.py).

    app = create_web_app("TwinLedger node console (h1)", static_dir=HERE / "static", error_page=pages.error_page,
                         chain_name="the consent ledger", readiness=lambda: console_checks(app.state.console))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, Environment, FileSystemLoader

from federation.web import SECURITY_HEADERS, STYLESHEET, add_security_headers
from federation.web.clients import proxy_networks
from federation.web.errors import ErrorPage, install_error_handlers
from federation.web.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit
from federation.web.probes import Checks, add_probes

TEMPLATES = Path(__file__).resolve().parent / "templates"


def create_web_app(title: str, *, static_dir: Path | None, error_page: ErrorPage, chain_name: str,
                   headers: dict[str, str] = SECURITY_HEADERS, refusals: Iterable[type[Exception]] = (),
                   explain_ledger_errors: bool = True, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                   body_limits: dict[str, int] | None = None, trusted_proxies: Iterable[str] = (),
                   readiness: Callable[[], Checks] | None = None,
                   before_scrape: Callable[[], None] | None = None) -> FastAPI:
    """`max_body_bytes` bounds every request body, `body_limits` the bodies of the paths named (an upload); both
    are enforced while the body streams in (federation.web.limits). `trusted_proxies` are the addresses (or
    networks) whose X-Forwarded-For is believed (federation.web.sessions.client_ip). `readiness` names the
    checks /readyz runs, `before_scrape` refreshes the app's gauges before /metrics answers (probes.add_probes)."""
    # No /docs or /redoc: they load scripts from a CDN, which the CSP forbids; /openapi.json describes the API.
    app = FastAPI(title=title, version="1", docs_url=None, redoc_url=None)

    @app.get("/static/web.css", include_in_schema=False)
    def shared_stylesheet() -> FileResponse:
        return FileResponse(STYLESHEET, media_type="text/css")

    add_probes(app, readiness=readiness, before_scrape=before_scrape)

    if static_dir is not None:
        app.mount("/static", StaticFiles(directory=static_dir), name="static")
    install_error_handlers(app, error_page=error_page, chain_name=chain_name, refusals=refusals,
                           explain_ledger_errors=explain_ledger_errors)
    app.state.trusted_proxies = proxy_networks(trusted_proxies)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, limits=body_limits)  # inside the security headers
    add_security_headers(app, headers)
    return app


def page_templates(directory: Path) -> Jinja2Templates:
    """An app's Jinja2 templates, with the kit's behind them: its base.html extends "web/page.html" (the one page
    layout) and includes "web/logout.html"."""
    loader = ChoiceLoader([FileSystemLoader(directory), FileSystemLoader(TEMPLATES)])
    return Jinja2Templates(env=Environment(loader=loader, autoescape=True))


def untyped(document: dict, *, bodiless: tuple[str, ...] = ()) -> list[str]:
    """What an OpenAPI document leaves untyped: an operation without a typed 200/201 answer, an error answer
    without a body schema, a POST/PUT/PATCH without a request body (unless its path ends with one of `bodiless`).
    The apps' schema tests assert that the list is empty."""
    gaps = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            answers = operation["responses"]
            ok = answers.get("200") or answers.get("201")
            if not (ok and ok.get("content")):
                gaps.append(f"{method} {path} has no typed response")
            gaps += [f"{method} {path} {status} is untyped" for status, answer in answers.items()
                     if status.startswith(("4", "5")) and not answer.get("content")]
            if method in ("post", "put", "patch") and "requestBody" not in operation and not path.endswith(bodiless):
                gaps.append(f"{method} {path} has no typed request")
    return gaps
