"""Login, the current session, logout."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from federation.web import auth
from node.portal import accounts
from node.portal.deps import CurrentPatient, Db, Settings, client_ip
from node.portal.models import PortalSession
from node.portal.schemas import ERRORS, AccountOut, LoginRequest, Message, PasswordChange, SessionOut

router = APIRouter(prefix="/api", tags=["session"], responses=ERRORS)


def set_device_cookie(response: Response, settings, value: str) -> None:
    """The browser's device cookie (accounts.DEVICE_COOKIE): sent only with logins, never readable by scripts."""
    response.set_cookie(accounts.DEVICE_COOKIE, value, max_age=settings.device_cookie_ttl_s, httponly=True,
                        samesite="strict", secure=settings.cookie_secure, path="/")


@router.post("/session", response_model=SessionOut, status_code=201)
def login(body: LoginRequest, request: Request, response: Response, db: Db, settings: Settings) -> SessionOut:
    device = request.cookies.get(accounts.DEVICE_COOKIE)
    account = accounts.authenticate(db, settings, username=body.username, password=body.password,
                                    client_ip=client_ip(request), device_cookie=device)
    opened = accounts.open_session(db, settings, account, password=body.password)
    response.set_cookie(settings.cookie_name, opened.token, max_age=settings.session_ttl_s, httponly=True,
                        samesite="strict", secure=settings.cookie_secure, path="/")
    set_device_cookie(response, settings, accounts.trust_device(db, settings, account, device))
    return SessionOut(username=account.username, csrf_token=opened.csrf_token, expires_at=opened.expires_at)


@router.get("/session", response_model=SessionOut)
def current(patient: CurrentPatient) -> SessionOut:
    row: PortalSession = patient.session
    return SessionOut(username=patient.holder.username, csrf_token=row.csrf_token, expires_at=row.expires_at)


@router.delete("/session", response_model=Message)
def logout(patient: CurrentPatient, response: Response, db: Db, settings: Settings) -> Message:
    auth.close_session(db, patient.session)
    response.delete_cookie(settings.cookie_name, path="/", httponly=True, samesite="strict", secure=settings.cookie_secure)
    return Message(detail="logged out")


@router.get("/me", response_model=AccountOut)
def me(patient: CurrentPatient, settings: Settings) -> AccountOut:
    a = patient.holder
    return AccountOut(username=a.username, pseudonym=a.pseudonym, consent_address=a.consent_address,
                      key_custody=a.key_custody, hospital=settings.node.hospital)


@router.post("/me/password", response_model=Message)
def change_password(body: PasswordChange, patient: CurrentPatient, db: Db, settings: Settings) -> Message:
    accounts.change_password(db, settings, patient.holder, password=body.password, new_password=body.new_password,
                             session_id=patient.session.id)
    return Message(detail="password changed; your consent key is now sealed under the new password")
