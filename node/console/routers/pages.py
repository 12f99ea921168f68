"""Server-rendered pages (Jinja2) over the same functions as the JSON API.

Forms are application/x-www-form-urlencoded, parsed here; each POST carries a CSRF token in a hidden field
(the session's once logged in, a double-submit cookie on the login form). The record upload is the one
piece of JavaScript (static/console.js): it sends the file to POST /api/imports.
"""

from __future__ import annotations

from pathlib import Path as FilePath

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import select

from federation import web
from federation.web.app import page_templates
from federation.web import auth
from federation.web.models import ActionLog
from node.console import budget, records
from federation.web.errors import WebError
from federation.web.sessions import Caller, FormToken, require_role
from node.console.deps import Db, State, client_ip, record
from node.console.health import node_health
from node.console.routers.actions import action_list
from node.console.routers.enrolment import issue
from node.console.routers.session import clear_cookie, login, set_cookie
from node.console.schemas import EnrolmentCodeRequest

HERE = FilePath(__file__).resolve().parent.parent
templates = page_templates(HERE / "templates")
router = APIRouter(include_in_schema=False)
FORM_TOKEN = FormToken("twinledger_console_form", path="/login")
MAX_FORM_BYTES = 8 * 1024
PAGE_SIZE = 100


async def read_form(request: Request) -> dict[str, str]:
    fields = await web.read_form(request, max_bytes=MAX_FORM_BYTES, max_fields=10)
    return {name: values[0] for name, values in fields.items()}


def render(request: Request, name: str, *, status: int = 200, staff: Caller | None = None, **context) -> HTMLResponse:
    state = request.app.state.console
    context.setdefault("title", "")
    context.setdefault("error", None)
    context.setdefault("notice", None)
    return templates.TemplateResponse(request, name, {
        "hospital": state.settings.node.hospital, "staff": staff,
        "csrf_token": staff.session.csrf_token if staff and staff.session else context.pop("csrf_token", ""),
        "path": request.url.path, **context,
    }, status_code=status)


def error_page(request: Request, message: str, status: int) -> HTMLResponse:
    return render(request, "error.html", status=status, title="Something went wrong", error=message)


def _staff(request: Request, db, state, form: dict | None = None) -> Caller:
    return state.guard.require_page(request, db, form_csrf=None if form is None else form.get("csrf_token", ""))


@router.get("/login")
def login_page(request: Request, state: State) -> HTMLResponse:
    token = FORM_TOKEN.current(request)
    response = render(request, "login.html", title="Log in", form_token=token)
    return FORM_TOKEN.set(response, token, secure=state.settings.cookie_secure)


@router.post("/login")
async def login_form(request: Request, db: Db, state: State) -> Response:
    form = await read_form(request)
    if not FORM_TOKEN.matches(request, form.get("form_token")):
        return render(request, "login.html", status=403, title="Log in", form_token=FORM_TOKEN.current(request),
                      error="this form is out of date: reload the page and try again")
    try:
        _, opened = login(db, state, token=form.get("token", ""), client=client_ip(request))
    except WebError as exc:
        return render(request, "login.html", status=exc.status, title="Log in", form_token=FORM_TOKEN.current(request),
                      error=str(exc))
    response = RedirectResponse("/", status_code=303)
    set_cookie(response, state, opened)
    return response


@router.post("/logout")
async def logout(request: Request, db: Db, state: State) -> Response:
    staff = _staff(request, db, state, await read_form(request))
    auth.close_session(db, staff.session)
    record(db, staff, "logout")
    response = RedirectResponse("/login", status_code=303)
    clear_cookie(response, state)
    return response


@router.get("/")
def health_page(request: Request, db: Db, state: State) -> HTMLResponse:
    staff = _staff(request, db, state)
    return render(request, "health.html", staff=staff, title="Node health", health=node_health(state))


@router.get("/patients")
def patients_page(request: Request, db: Db, state: State, page: int = 1) -> HTMLResponse:
    staff = _staff(request, db, state)
    page = max(1, min(page, 100_000))
    listing = records.patient_page(db, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, cohort=None)
    last_import = None
    if request.query_params.get("imported"):
        last_import = db.exec(select(ActionLog).where(ActionLog.actor == staff.name, ActionLog.action == "records.import",
                                                      ActionLog.outcome == "ok").order_by(ActionLog.id.desc())).first()
    pages = max(1, -(-listing.total // PAGE_SIZE))
    return render(request, "patients.html", staff=staff, title="Patients", listing=listing, page=page, pages=pages,
                  notice=f"Imported {last_import.target}: {last_import.detail}." if last_import else None)


@router.get("/patients/{record_number:path}")
def record_page(request: Request, record_number: str, db: Db, state: State) -> HTMLResponse:
    staff = _staff(request, db, state)
    require_role(staff, "it-admin")
    try:
        found = records.record_view(state, db, record_number)
    except WebError as exc:
        return error_page(request, str(exc), exc.status)
    record(db, staff, "records.view", target=record_number)
    return render(request, "record.html", staff=staff, title=f"Record {record_number}", patient=found)


@router.get("/enrolment")
def enrolment_page(request: Request, db: Db, state: State) -> HTMLResponse:
    staff = _staff(request, db, state)
    return render(request, "enrolment.html", staff=staff, title="Enrolment codes", codes=records.outstanding_codes(db))


@router.post("/enrolment")
async def enrolment_form(request: Request, db: Db, state: State) -> HTMLResponse:
    form = await read_form(request)
    staff = _staff(request, db, state, form)
    require_role(staff, "it-admin")
    number = form.get("record_number", "").strip()
    issued, error, status = None, None, 201
    try:
        EnrolmentCodeRequest(record_number=number)
        issued = issue(db, state, staff, number)
    except ValidationError:
        error, status = "type the patient's record number (1 to 64 characters)", 422
    except WebError as exc:
        error, status = str(exc), exc.status
    return render(request, "enrolment.html", status=status, staff=staff, title="Enrolment codes", issued=issued,
                  error=error, record_number=number if error else "", codes=records.outstanding_codes(db))


@router.get("/studies")
def studies_page(request: Request, db: Db, state: State) -> HTMLResponse:
    staff = _staff(request, db, state)
    return render(request, "studies.html", staff=staff, title="Studies and privacy budget", studies=budget.studies(state))


@router.get("/actions")
def actions_page(request: Request, db: Db, state: State) -> HTMLResponse:
    staff = _staff(request, db, state)
    return render(request, "actions.html", staff=staff, title="Action log", actions=action_list(db, limit=200, offset=0))
