"""Server-rendered pages (Jinja2) over the same functions as the JSON API.

Every POST form carries a CSRF token in a hidden field: the session's token once logged in, a
double-submit cookie on the login form. The live run page polls GET /api/runs/{name} every 2 s from
/static/run.js (first-party; the CSP allows no other script).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path as FilePath
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from contracts.ledger import ContractRejected
from coordinator.console import service, studies
from coordinator.console.deps import ConsoleState, Db, State, require_operator_role
from coordinator.console.routers.session import clear_cookie, log_in, set_cookie
from coordinator.console.runs import NAME_PATTERN
from coordinator.console.schemas import RunCreate, StudyCreate
from federation import web
from federation.web.app import page_templates
from federation.web import auth
from federation.web.errors import WebError
from federation.web.sessions import Caller, FormToken, client_ip, log_action
from federation.tasks import TASKS

HERE = FilePath(__file__).resolve().parent.parent
templates = page_templates(HERE / "templates")
router = APIRouter(include_in_schema=False)
FORM_TOKEN = FormToken("twinledger_console_form")
MAX_FORM_BYTES = 16 * 1024
RunName = Annotated[str, Path(pattern=NAME_PATTERN)]


async def read_form(request: Request) -> dict[str, list[str]]:
    return await web.read_form(request, max_bytes=MAX_FORM_BYTES, max_fields=40)


def one(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0]


def render(request: Request, name: str, *, caller: Caller | None = None, status: int = 200, **context) -> HTMLResponse:
    context.setdefault("title", "")
    context.setdefault("nav", "")
    user = {"name": caller.name, "role": caller.role, "csrf": caller.session.csrf_token if caller and caller.session else ""} \
        if caller else None
    return templates.TemplateResponse(request, name, {"user": user, **context}, status_code=status)


def error_page(request: Request, message: str, status: int) -> HTMLResponse:
    return render(request, "error.html", status=status, title="Something went wrong", error=message)


def _caller(request: Request, db, state: ConsoleState) -> Caller | None:
    return state.guard.identify(request, db, cookie_only=True)  # pages run on the session cookie


def _logged_in(request: Request, db, state: ConsoleState, form: dict | None = None) -> Caller:
    return state.guard.require_page(request, db, form_csrf=None if form is None else one(form, "csrf_token"))


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


@router.get("/")
def home(request: Request, db: Db, state: State) -> Response:
    return RedirectResponse("/studies" if _caller(request, db, state) else "/login", status_code=303)


def _login_page(request: Request, state: ConsoleState, *, status: int = 200, error: str | None = None) -> HTMLResponse:
    token = FORM_TOKEN.current(request)
    response = render(request, "login.html", status=status, title="Log in", csrf_token=token, error=error)
    return FORM_TOKEN.set(response, token, secure=state.settings.cookie_secure)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, state: State) -> HTMLResponse:
    return _login_page(request, state)


@router.post("/login")
async def login(request: Request, db: Db, state: State) -> Response:
    form = await read_form(request)
    if not FORM_TOKEN.matches(request, one(form, "csrf_token")):
        return _login_page(request, state, status=403, error="this form is out of date: reload the page and try again")
    try:
        _, opened = log_in(state, db, client_ip(request), one(form, "token")[:200])
    except WebError as exc:
        return _login_page(request, state, status=exc.status, error=str(exc))
    response = RedirectResponse("/studies", status_code=303)
    set_cookie(response, state, opened)
    return response


@router.post("/logout")
async def logout(request: Request, db: Db, state: State) -> Response:
    caller = _logged_in(request, db, state, await read_form(request))
    auth.close_session(db, caller.session)
    log_action(db, caller, "logout")
    response = RedirectResponse("/login", status_code=303)
    clear_cookie(response, state)
    return response


def _studies_page(request: Request, state: ConsoleState, caller: Caller, *, status: int = 200, **extra) -> HTMLResponse:
    return render(request, "studies.html", caller=caller, status=status, title="Studies", nav="studies",
                  studies=service.list_studies(state), purposes=studies.PURPOSES, categories=list(studies.DATA_CATEGORIES),
                  tasks={t: getattr(TASKS[t], 'purpose', '') for t in sorted(TASKS)}, default_end=(date.today() + timedelta(days=90)).isoformat(), **extra)


@router.get("/studies", response_class=HTMLResponse)
def studies_page(request: Request, db: Db, state: State) -> Response:
    caller = _caller(request, db, state)
    if caller is None:
        return RedirectResponse("/login", status_code=303)
    created = request.query_params.get("created", "")
    notice = f"Study {created} is proposed on chain. Hospitals can now accept it." if created.startswith("0x") \
        and len(created) == 66 else None
    return _studies_page(request, state, caller, notice=notice)


@router.post("/studies")
async def create_study(request: Request, db: Db, state: State) -> Response:
    form = await read_form(request)
    caller = _logged_in(request, db, state, form)
    require_operator_role(caller, db, "study.create", request.url.path)
    fields = {k: one(form, k) for k in ("purpose", "task_id", "epsilon_budget", "delta_exponent", "rounds", "ends_on")}
    try:
        body = StudyCreate(**fields, data_categories=form.get("data_categories", []))
        created = service.create_study(state, db, caller, body, client=caller.client)
    except ValidationError as exc:
        return _studies_page(request, state, caller, status=422, error=_first_error(exc), form=fields)
    except WebError as exc:  # StudyError included
        return _studies_page(request, state, caller, status=exc.status, error=str(exc), form=fields)
    except ContractRejected as exc:
        return _studies_page(request, state, caller, status=409, error=f"the ledger refused: {exc}", form=fields)
    return RedirectResponse(f"/studies?created={created.study_id}", status_code=303)


def _runs_page(request: Request, db, state: ConsoleState, caller: Caller, *, status: int = 200, **extra) -> HTMLResponse:
    live = [s for s in service.list_studies(state) if not s.ended and not s.suspended]
    return render(request, "runs.html", caller=caller, status=status, title="Runs", nav="runs",
                  runs=service.list_runs(state, db), studies=live, superlink=state.settings.superlink, **extra)


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request, db: Db, state: State) -> Response:
    caller = _caller(request, db, state)
    if caller is None:
        return RedirectResponse("/login", status_code=303)
    return _runs_page(request, db, state, caller, form={"study_id": request.query_params.get("study", "")})


@router.post("/runs")
async def launch(request: Request, db: Db, state: State) -> Response:
    form = await read_form(request)
    caller = _logged_in(request, db, state, form)
    require_operator_role(caller, db, "run.launch", request.url.path)
    fields = {k: one(form, k) for k in ("study_id", "name", "rounds", "min_nodes", "local_epochs", "learning_rate",
                                        "batch_size", "max_grad_norm", "strategy")}
    try:
        body = RunCreate(**{k: v for k, v in fields.items() if v != ""})
        run = service.launch_run(state, db, caller, body, client=caller.client)
    except ValidationError as exc:
        return _runs_page(request, db, state, caller, status=422, error=_first_error(exc), form=fields)
    except (WebError, service.RunError) as exc:
        return _runs_page(request, db, state, caller, status=exc.status, error=str(exc), form=fields)
    except ContractRejected as exc:
        return _runs_page(request, db, state, caller, status=409, error=f"the ledger refused: {exc}", form=fields)
    return RedirectResponse(f"/runs/{quote(run.name)}", status_code=303)


@router.get("/runs/{name}", response_class=HTMLResponse)
def run_page(name: RunName, request: Request, db: Db, state: State) -> Response:
    caller = _caller(request, db, state)
    if caller is None:
        return RedirectResponse("/login", status_code=303)
    run = service.run_out(state, db, service.require_run(db, name))
    notice = "Stop requested: the SuperLink stops the run." if request.query_params.get("stopped") else None
    return render(request, "run.html", caller=caller, title=f"Run {run.name}", nav="runs", run=run, notice=notice)


@router.post("/runs/{name}/stop")
async def stop(name: RunName, request: Request, db: Db, state: State) -> Response:
    form = await read_form(request)
    caller = _logged_in(request, db, state, form)
    require_operator_role(caller, db, "run.stop", request.url.path)
    try:
        service.stop_run(state, db, caller, name, client=caller.client)
    except service.RunError as exc:
        run = service.run_out(state, db, service.require_run(db, name))
        return render(request, "run.html", caller=caller, status=exc.status, title=f"Run {name}", nav="runs", run=run,
                      error=str(exc))
    return RedirectResponse(f"/runs/{quote(name)}?stopped=1", status_code=303)


@router.get("/activity", response_class=HTMLResponse)
def activity_page(request: Request, db: Db, state: State) -> Response:
    caller = _caller(request, db, state)
    if caller is None:
        return RedirectResponse("/login", status_code=303)
    return render(request, "activity.html", caller=caller, title="Activity", nav="activity",
                  entries=auth.activity(db, limit=500))
