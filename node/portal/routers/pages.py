"""Server-rendered pages (Jinja2) over the same functions as the JSON API.

Forms are parsed here (application/x-www-form-urlencoded, standard library), so no multipart parser is
needed. Every POST carries a CSRF token in a hidden field: the session's token once logged in, a
double-submit cookie before (login and enrolment forms).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from federation import web
from federation.web.app import page_templates
from federation.web.sessions import FormToken
from federation import ids
from federation.web import auth
from node.portal import accounts, relays, studies, views
from node.portal.accounts import PortalError
from node.portal.deps import Caller, Db, PatientRequest, Settings, State, client_ip
from node.portal.routers.session import set_device_cookie
from node.portal.routers.studies import change_ask, wait_for_ledger
from node.portal import withdrawals
from node.portal.routers.withdrawals import checked_at_the_door
from node.portal.schemas import (
    STUDY_ID_PATTERN, ConsentChangeOut, LoginRequest, RedeemRequest, StudyDetailOut, WithdrawalRequest,
)

HERE = FilePath(__file__).resolve().parent.parent
templates = page_templates(HERE / "templates")
templates.env.filters["sentence"] = lambda text: str(text)[:1].upper() + str(text)[1:]  # keeps "ECG" as it is
templates.env.filters["phase"] = lambda phase: {"train": "training", "evaluate": "evaluation"}.get(phase, phase)
router = APIRouter(include_in_schema=False)
FORM_TOKEN = FormToken("twinledger_form")
MAX_FORM_BYTES = 16 * 1024

StudyId = Annotated[str, Path(pattern=STUDY_ID_PATTERN)]
RoundNumber = Annotated[int, Path(ge=1, le=2**32 - 1)]


async def read_form(request: Request) -> dict[str, str]:
    fields = await web.read_form(request, max_bytes=MAX_FORM_BYTES, max_fields=20, refuse=PortalError)
    return {name: values[0] for name, values in fields.items()}


def render(request: Request, name: str, settings, *, status: int = 200, **context) -> HTMLResponse:
    context.setdefault("title", "")
    return templates.TemplateResponse(request, name, {"hospital": settings.node.hospital, **context}, status_code=status)


def error_page(request: Request, settings, message: str, status: int) -> HTMLResponse:
    return render(request, "error.html", settings, status=status, title="Something went wrong", error=message)


def _session(request: Request, db) -> Caller | None:
    return request.app.state.portal.guard.identify(request, db)


def _visit(request: Request, db, state) -> PatientRequest | None:
    """A logged-in patient's page request, or None (the page then sends the browser to /login)."""
    caller = _session(request, db)
    db.commit()  # hand the connection back: the page then asks the chain
    return PatientRequest(caller, db, state) if caller else None


def _logged_in(request: Request, db, settings, form: dict | None = None) -> Caller:
    guard = request.app.state.portal.guard
    caller = guard.require_page(request, db, form_csrf=None if form is None else form.get("csrf_token", ""))
    db.commit()  # hand the connection back: what follows may ask the chain
    return caller


def _form_page(request: Request, settings, template: str, *, status: int = 200, **context) -> HTMLResponse:
    token = FORM_TOKEN.current(request)
    response = render(request, template, settings, status=status, csrf_token=token, **context)
    return FORM_TOKEN.set(response, token, secure=settings.cookie_secure)


def _check_form_token(request: Request, form: dict) -> None:
    if not FORM_TOKEN.matches(request, form.get("csrf_token")):
        raise PortalError("this form is out of date or was not sent from the portal: reload the page and try again",
                          status=403)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"])
    return f"{field}: {error['msg']}"


@router.get("/")
def home(request: Request, db: Db) -> Response:
    return RedirectResponse("/studies" if _session(request, db) else "/login", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, settings: Settings) -> HTMLResponse:
    return _form_page(request, settings, "login.html", title="Log in")


@router.post("/login")
async def login(request: Request, db: Db, settings: Settings) -> Response:
    form = await read_form(request)
    _check_form_token(request, form)
    device = request.cookies.get(accounts.DEVICE_COOKIE)
    try:
        body = LoginRequest(username=form.get("username", ""), password=form.get("password", ""))
        account = await run_in_threadpool(  # scrypt: off the event loop
            accounts.authenticate, db, settings, username=body.username, password=body.password,
            client_ip=client_ip(request), device_cookie=device)
    except ValidationError as exc:
        return _form_page(request, settings, "login.html", status=422, title="Log in", error=_first_error(exc))
    except PortalError as exc:
        return _form_page(request, settings, "login.html", status=exc.status, title="Log in", error=str(exc),
                          username=form.get("username", ""))
    opened = await run_in_threadpool(accounts.open_session, db, settings, account, password=body.password)  # scrypt
    response = RedirectResponse("/studies", status_code=303)
    response.set_cookie(settings.cookie_name, opened.token, max_age=settings.session_ttl_s, httponly=True,
                        samesite="strict", secure=settings.cookie_secure, path="/")
    set_device_cookie(response, settings, accounts.trust_device(db, settings, account, device))
    return response


def _withdraw_page(request: Request, state, *, status: int = 200, **context) -> HTMLResponse:
    ledger = state.ledger
    choices = [{"id": studies.study_hex(sid), "purpose": studies.purpose_text(ledger.study(sid).purpose)}
               for sid in studies.accepted_studies(ledger)]
    return _form_page(request, state.settings, "withdraw.html", status=status, title="Withdraw without logging in",
                      choices=choices, **context)


@router.get("/withdraw", response_class=HTMLResponse)
def withdraw_page(request: Request, state: State) -> HTMLResponse:
    return _withdraw_page(request, state)


@router.post("/withdraw")
async def withdraw(request: Request, db: Db, state: State) -> Response:
    """The withdrawal door (node.portal.withdrawals) as a form, for a browser that cannot log in."""
    form = await read_form(request)
    _check_form_token(request, form)
    again = {"username": form.get("username", "")}
    try:
        body = WithdrawalRequest(username=form.get("username", ""), password=form.get("password", ""),
                                 study_id=form.get("study_id", ""))
        account = await run_in_threadpool(checked_at_the_door, request, db, state, username=body.username,
                                          password=body.password)
        if account.key_custody == "wallet":  # the page hands the wallet what to sign (portal.js)
            typed = await run_in_threadpool(withdrawals.revoke_typed_data, state, account, study_id=body.study_id)
            return await run_in_threadpool(_withdraw_page, request, state, typed=typed, study_id=body.study_id,
                                           consent_address=account.consent_address, **again)
        row = await run_in_threadpool(withdrawals.withdraw, db, state, account, password=body.password,
                                      study_id=body.study_id)
    except ValidationError as exc:
        return await run_in_threadpool(_withdraw_page, request, state, status=422, error=_first_error(exc), **again)
    except PortalError as exc:
        return await run_in_threadpool(_withdraw_page, request, state, status=exc.status, error=str(exc), **again)
    await wait_for_ledger(state, row, timeout_s=state.settings.page_relay_wait_s)
    db.refresh(row)
    db.commit()
    return await run_in_threadpool(_withdraw_page, request, state, change=row)


@router.get("/enrol", response_class=HTMLResponse)
def enrol_page(request: Request, settings: Settings) -> HTMLResponse:
    return _form_page(request, settings, "enrol.html", title="Open your account")


@router.post("/enrol")
async def enrol(request: Request, db: Db, settings: Settings, state: State) -> Response:
    form = await read_form(request)
    _check_form_token(request, form)
    wallet = form.get("key_custody") == "wallet"
    again = dict(title="Open your account", username=form.get("username", ""), wallet=wallet,
                 wallet_address=form.get("wallet_address", ""))
    if form.get("password", "") != form.get("password2", ""):
        return _form_page(request, settings, "enrol.html", status=422, error="the two passwords differ", **again)
    if wallet and not form.get("wallet_address", "").strip():
        return _form_page(request, settings, "enrol.html", status=422,
                          error="wallet_address: give your wallet's address, or let the portal keep your key", **again)
    try:
        body = RedeemRequest(code=form.get("code", ""), username=form.get("username", ""), password=form.get("password", ""),
                             wallet_address=form.get("wallet_address", "").strip() if wallet else None)
        with state.chain_lock:
            accounts.redeem_enrolment_code(db, settings, lambda: state.ledger, code=body.code, username=body.username,
                                           password=body.password, wallet_address=body.wallet_address)
    except ValidationError as exc:
        return _form_page(request, settings, "enrol.html", status=422, error=_first_error(exc), **again)
    except PortalError as exc:
        return _form_page(request, settings, "enrol.html", status=exc.status, error=str(exc), **again)
    key = ("your wallet's address is recorded as your consent key" if body.wallet_address
           else "your consent key is recorded")
    return _form_page(request, settings, "login.html", title="Log in", username=body.username,
                      notice=f"Your account is open and {key}. Log in to make your choices.")


@router.post("/logout")
async def logout(request: Request, db: Db, settings: Settings) -> Response:
    form = await read_form(request)
    current = _logged_in(request, db, settings, form)
    auth.close_session(db, current.session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(settings.cookie_name, path="/", httponly=True, samesite="strict", secure=settings.cookie_secure)
    return response


def _patient_page(request: Request, settings, current: Caller, template: str, **context) -> HTMLResponse:
    return render(request, template, settings, user=current.holder.username, csrf_token=current.session.csrf_token,
                  **context)


@router.get("/studies", response_class=HTMLResponse)
def studies_page(request: Request, db: Db, state: State) -> Response:
    me = _visit(request, db, state)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    rows = views.all_studies(me.ledger, me.settings, me.pseudonym)
    return _patient_page(request, me.settings, me.caller, "studies.html", title="Your studies", studies=rows)


def _study_page(request: Request, me: PatientRequest, study_id: str, *, status=200, change_id: int | None = None,
                **extra) -> HTMLResponse:
    ledger, settings, sid, pseudonym = me.ledger, me.settings, ids.StudyId.parse(study_id), me.pseudonym
    terms = studies.require_study(ledger, sid)
    history = [ConsentChangeOut(granted=g, block=b) for g, b in studies.consent_history(ledger, pseudonym, sid)]
    detail = StudyDetailOut(**views.study_out(ledger, settings, terms, pseudonym), history=history)
    rounds = studies.rounds_using(ledger, me.state.store, me.account.pseudonym, sid)
    change = None
    if change_id is not None:
        row = relays.change_of(me.db, me.account, change_id)
        if row.study_id == study_id.lower():
            change = views.change_out(ledger, row, pseudonym)
    return _patient_page(request, settings, me.caller, "study.html", status=status, title=f"Study for {detail.purpose}",
                         s=detail, rounds=rounds, change=change, wallet=me.account.key_custody == "wallet",
                         consent_address=me.account.consent_address,
                         explorer=lambda block: views.explorer_url(settings, block), **extra)


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(study_id: StudyId, request: Request, db: Db, state: State) -> Response:
    me = _visit(request, db, state)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    change = request.query_params.get("change", "")
    change_id = int(change) if change.isdigit() and len(change) < 18 else None
    return _study_page(request, me, study_id, change_id=change_id)


@router.post("/studies/{study_id}/{action}")
async def change(study_id: StudyId, action: str, request: Request, db: Db, state: State) -> Response:
    """Grant or revoke with the password-sealed key; the page then follows the change until the chain records it."""
    if action not in ("grant", "revoke"):
        raise PortalError("no such page", status=404)
    form = await read_form(request)
    me = PatientRequest(_logged_in(request, db, state.settings, form), db, state)
    try:
        until = None
        if action == "grant" and form.get("valid_until"):
            try:
                day = datetime.strptime(form["valid_until"], "%Y-%m-%d").replace(tzinfo=timezone.utc)
            except ValueError:
                raise PortalError("the end date must be a date such as 2027-12-31", status=422) from None
            until = views.seconds_of(day)
        queued = await state.desk.change(change_ask(request, state, study_id, action, valid_until=until,
                                                    password=form.get("password", "")[:256],
                                                    form_csrf=form.get("csrf_token", "")))
    except PortalError as exc:
        if exc.status in (401, 404):
            raise
        return await run_in_threadpool(_study_page, request, me, study_id, status=exc.status, error=str(exc))
    # a quick chain answers before the page shows; a slow one is followed by the page
    await wait_for_ledger(state, queued.row, timeout_s=state.settings.page_relay_wait_s)
    return RedirectResponse(f"/studies/{study_id}?change={queued.row.id}", status_code=303)


@router.get("/studies/{study_id}/rounds/{round_number}", response_class=HTMLResponse)
def round_page(study_id: StudyId, round_number: RoundNumber, request: Request, db: Db, state: State) -> Response:
    """One round that used the patient's data: its anchor on the chain and how to check it."""
    me = _visit(request, db, state)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    ledger, sid = me.ledger, ids.StudyId.parse(study_id)
    terms = studies.require_study(ledger, sid)
    proof = studies.round_proof(ledger, me.state.store, me.account.pseudonym, sid, round_number)
    return _patient_page(request, me.settings, me.caller, "round.html", title=f"Round {round_number}",
                         r=views.round_proof_out(ledger, me.settings, proof, study_id),
                         purpose=studies.purpose_text(terms.purpose), registry=ledger.deployment.consent_registry,
                         pseudonym=me.account.pseudonym)
