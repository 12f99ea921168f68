"""The one error model of the three web apps: every refusal is a `WebError` (or an exception with a `status`),
and every 4xx/5xx answer, 422 included, has the same body under /api:

    {"detail": "what was wrong, in words", "error": {"code": "not_found", "message": "...", "status": 404}}

(`detail` is the sentence the pages, the scripts and older clients read; a 422 adds `error.errors`, pydantic's
list). Elsewhere the app's error page answers, and a page that needs a login sends the browser to /login.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from federation.chain_errors import ChainDown, ChainError, ChainRefusal

log = logging.getLogger("twinledger.web")

ErrorPage = Callable[[Request, str, int], Response]  # (request, message, status) -> the app's error page


class WebError(Exception):
    """A request a web app refuses; `status` is the HTTP status to answer with, `code` a stable word for scripts."""

    def __init__(self, message: str, *, status: int = 400, headers: dict | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.code = code or code_of(status)


def code_of(status: int) -> str:
    """A status as a word: 404 -> "not_found", 422 -> "unprocessable_content"."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "error"
    return "_".join(phrase.lower().replace("-", " ").split())


class ErrorBody(BaseModel):
    code: str = Field(description="what kind of refusal, as a word (the HTTP status's name unless more is known)")
    message: str = Field(description="what was wrong, in words a person can read")
    status: int
    errors: list[dict[str, Any]] | None = Field(default=None, description="422: every field that was wrong")


class Problem(BaseModel):
    """The body of every error answer of every TwinLedger web API."""

    detail: str = Field(description="what was wrong, in words a person can read (the same as error.message)")
    error: ErrorBody


MEANING = {400: "the request cannot be used", 401: "not logged in", 403: "a wrong role, password or CSRF token",
           404: "not found", 409: "refused in the current state, or refused by the ledger", 410: "gone",
           413: "too large", 415: "unsupported content type", 422: "a field is missing or malformed",
           429: "too many failed attempts", 503: "the chain cannot be reached"}


def problem_responses(*statuses: int, meaning: dict[int, str] | None = None) -> dict:
    """OpenAPI `responses=` for these error statuses (and 400 and 422, which any route may answer)."""
    words = {**MEANING, **(meaning or {})}
    return {status: {"model": Problem, "description": words.get(status, code_of(status))}
            for status in sorted({400, 422, *statuses})}


def problem(message: str, status: int, *, code: str | None = None, errors: list | None = None,
            headers: dict | None = None) -> JSONResponse:
    body = Problem(detail=message, error=ErrorBody(code=code or code_of(status), message=message, status=status,
                                                   errors=errors))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def is_api(request: Request) -> bool:
    return request.url.path.startswith(("/api", "/static"))


def install_error_handlers(app: FastAPI, *, error_page: ErrorPage, chain_name: str,
                           refusals: Iterable[type[Exception]] = (), explain_ledger_errors: bool = True) -> None:
    """Answer every refusal of `app` alike: JSON Problems under /api, `error_page` (or /login on 401) elsewhere.
    `refusals` are further exception classes carrying a `status` (and maybe `headers`) attribute; a ledger error's
    own words reach the caller only when `explain_ledger_errors` (staff consoles yes, the patients' portal no)."""

    def answer(request: Request, message: str, status: int, *, code: str | None = None, errors: list | None = None,
               headers: dict | None = None) -> Response:
        if is_api(request):
            return problem(message, status, code=code, errors=errors, headers=headers)
        if status == 401:
            return RedirectResponse("/login", status_code=303)
        return error_page(request, message, status)

    async def refused(request: Request, exc: Exception) -> Response:
        return answer(request, str(exc), exc.status, code=getattr(exc, "code", None), headers=getattr(exc, "headers", None))

    for kind in (WebError, *refusals):
        app.add_exception_handler(kind, refused)

    @app.exception_handler(ChainRefusal)
    async def rejected(request: Request, exc: ChainRefusal) -> Response:
        status = 404 if exc.error_name == "UnknownStudy" else 409
        return answer(request, f"the ledger refused: {exc}", status, code="ledger_refused")

    @app.exception_handler(ChainDown)
    async def unavailable(request: Request, exc: ChainDown) -> Response:
        log.warning("chain unavailable: %s", exc)
        return answer(request, f"{chain_name} cannot be reached: try again later", 503, code="chain_unavailable")

    @app.exception_handler(ChainError)
    async def ledger_error(request: Request, exc: ChainError) -> Response:
        log.warning("ledger error: %s", exc)
        reason = str(exc) if explain_ledger_errors else "try again later"
        return answer(request, f"{chain_name} could not answer: {reason}", 503, code="chain_error")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = jsonable_encoder(exc.errors())
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors[:10]]
        return answer(request, "; ".join(problems) or "the request is malformed", 422, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return answer(request, str(exc.detail), exc.status_code, headers=getattr(exc, "headers", None))
