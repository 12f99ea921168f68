"""What the portal does with accounts, as plain functions (the routers and hospital IT's tools call them):
staff token, enrolment codes, redeeming a code, login with rate limiting, sessions."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from eth_account import Account
from sqlmodel import Session, col, delete, func, select, update

from contracts.ledger import Ledger
from federation.web import auth
from federation.web.errors import WebError
from federation.web.models import aware
from node import admin
from node.portal import security
from node.portal.models import DeviceCookie, EnrolmentCode, LoginFailure, PortalAccount, PortalSession, now
from node.portal.settings import PortalSettings
from node.store import Patient


class PortalError(WebError):
    """A request the portal refuses; `status` is the HTTP status to answer with (400 unless given)."""


# ---- the staff token ----

def create_staff_token(settings: PortalSettings) -> str:
    """Create `keys/staff.token` (owner-only) if missing; returns the token hospital IT uses."""
    path = settings.staff_token_file
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def staff_token_matches(settings: PortalSettings, given: str) -> bool:
    try:
        expected = settings.staff_token_file.read_text().strip()
    except FileNotFoundError:
        return False
    return bool(expected) and auth.same(given, expected)


# ---- enrolment ----

@dataclass(frozen=True)
class IssuedCode:
    code: str
    record_number: str
    expires_at: datetime


def create_enrolment_code(session: Session, settings: PortalSettings, record_number: str) -> IssuedCode:
    """A one-time code a patient redeems to open their portal account; only its hash is stored."""
    patient = session.exec(select(Patient).where(Patient.record_number == record_number)).first()
    if patient is None:
        raise PortalError(f"no patient with record number {record_number!r}", status=404)
    if session.exec(select(PortalAccount).where(PortalAccount.record_number == record_number)).first():
        raise PortalError(f"patient {record_number!r} already has a portal account", status=409)
    if patient.consent_key is not None:
        raise PortalError(f"patient {record_number!r} is already enrolled on chain with another consent key", status=409)
    code = security.new_enrolment_code()
    expires = now() + timedelta(seconds=settings.enrolment_code_ttl_s)
    session.add(EnrolmentCode(code_hash=auth.hash_token(security.normalise_code(code)), record_number=record_number,
                              expires_at=expires))
    session.commit()
    return IssuedCode(code, record_number, expires)


USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")


def redeem_enrolment_code(
    session: Session, settings: PortalSettings, ledger: Ledger | Callable[[], Ledger], *, code: str, username: str,
    password: str, wallet_address: str | None = None,
) -> PortalAccount:
    """Open the patient's account and enrol the pseudonym on chain with the patient's consent key: a new key
    sealed under the password, or, with `wallet_address`, the key the patient's own wallet holds (the portal
    then keeps no key at all and can never sign for the patient).

    `ledger` may be a function giving it, so that a bad code is refused before the chain is reached."""
    entry = session.exec(
        select(EnrolmentCode).where(EnrolmentCode.code_hash == auth.hash_token(security.normalise_code(code)))
    ).first()
    if entry is None or entry.used_at is not None or aware(entry.expires_at) <= now():
        raise PortalError("this enrolment code is unknown, already used or expired: ask the hospital for a new one",
                          status=400)
    if session.exec(select(PortalAccount).where(PortalAccount.username == username)).first():
        raise PortalError(f"the user name {username!r} is taken: choose another", status=409)
    patient = session.exec(select(Patient).where(Patient.record_number == entry.record_number)).first()
    if patient is None:
        raise PortalError("the patient record of this code no longer exists", status=410)
    if patient.consent_key is not None:
        raise PortalError("this patient is already enrolled on chain with another consent key", status=409)
    salt, hashed = security.hash_password(password)
    if wallet_address:
        address, custody, key_salt, sealed = wallet_address, "wallet", b"", b""
    else:
        key = Account.create()
        address, custody = key.address, "portal"
        key_salt, sealed = security.seal_key(bytes(key.key), password, associated=patient.pseudonym)
        del key
    account = PortalAccount(
        username=username, record_number=patient.record_number, pseudonym=patient.pseudonym,
        consent_address=address, key_custody=custody, password_salt=salt, password_hash=hashed, key_salt=key_salt,
        sealed_key=sealed,
    )
    entry.used_at = now()
    session.add(entry)
    session.add(account)
    session.commit()  # the code is spent before the chain is asked: a second redemption cannot race this one
    try:
        admin.enrol_patients(settings.node, ledger() if callable(ledger) else ledger, {patient.record_number: address})
    except Exception:
        session.delete(account)
        entry.used_at = None
        session.add(entry)
        session.commit()
        raise
    session.refresh(account)
    return account


# ---- login, rate limits, sessions ----

def failures(session: Session, settings: PortalSettings, kind: str, subject: str) -> int:
    since = now() - timedelta(seconds=settings.login_window_s)
    return session.exec(
        select(func.count()).select_from(LoginFailure).where(
            LoginFailure.kind == kind, LoginFailure.subject == subject, LoginFailure.at > since
        )
    ).one()


def check_rate_limit(session: Session, settings: PortalSettings, *, username: str, client_ip: str) -> None:
    """Before a login's password is checked: refused (429) after too many failed logins for the user name, or
    from the client's address when that address names one client (federation.web.clients: behind a proxy nobody
    declared in trusted-proxies, every client has the proxy's address, and locking it out would lock out everyone)."""
    if (failures(session, settings, "account", username) >= settings.max_failures_per_account
            or (real(client_ip) and failures(session, settings, "ip", client_ip) >= settings.max_failures_per_ip)):
        too_many(settings)


def real(client_ip: str) -> bool:
    return getattr(client_ip, "real", True)


def too_many(settings: PortalSettings):
    raise too_many_attempts(settings)


def too_many_attempts(settings: PortalSettings) -> PortalError:
    minutes = settings.login_window_s // 60
    return PortalError(f"too many failed attempts: try again in {minutes} minutes", status=429,
                       headers={"Retry-After": str(settings.login_window_s)})


def record_failure(session: Session, *, username: str, client_ip: str) -> None:
    session.add(LoginFailure(kind="account", subject=username))
    if real(client_ip):
        session.add(LoginFailure(kind="ip", subject=client_ip))
    session.commit()


# A logged-in patient re-enters the password to unlock the key (sign a change) or to change the password. Those
# attempts count per login session, apart from the logins: wrong logins for the user name (anyone can send them)
# must never make the patient's own correct password fail on a revocation, and whoever holds a stolen session
# still gets only a few guesses, since a new session needs the password.
def _session_subject(account: PortalAccount, session_id) -> str:
    return f"{account.id}:{session_id}"


def check_password_attempts(session: Session, settings: PortalSettings, account: PortalAccount, session_id) -> None:
    if password_attempts_left(session, settings, [(account, session_id)])[(account.id, session_id)] <= 0:
        too_many(settings)


def password_attempts_left(session: Session, settings: PortalSettings, logins: list[tuple[PortalAccount, int]]
                           ) -> dict[tuple[int, int], int]:
    """`check_password_attempts` for many (account id, session id) pairs with one query: the wrong passwords each
    may still send before it is refused (429)."""
    subjects = {_session_subject(account, session_id): (account.id, session_id) for account, session_id in logins}
    left = {pair: settings.max_failures_per_account for pair in subjects.values()}
    if not subjects:
        return left
    since = now() - timedelta(seconds=settings.login_window_s)
    counts = session.exec(
        select(LoginFailure.subject, func.count()).where(
            LoginFailure.kind == "session", col(LoginFailure.subject).in_(list(subjects)), LoginFailure.at > since,
        ).group_by(LoginFailure.subject)
    ).all()
    for subject, count in counts:
        left[subjects[subject]] = max(0, settings.max_failures_per_account - count)
    return left


def record_password_failure(session: Session, account: PortalAccount, session_id) -> None:
    session.add(password_failure(account, session_id))
    session.commit()


def password_failure(account: PortalAccount, session_id) -> LoginFailure:
    return LoginFailure(kind="session", subject=_session_subject(account, session_id))


# OWASP's device cookies: a browser that logged in to an account before holds a random token (only its SHA-256
# is stored). Its failed logins count against that token alone, and the per-account lockout, which anyone can
# trigger by typing wrong passwords for a user name, applies to untrusted clients only. So an attacker without
# the password cannot keep a patient from logging in (and withdrawing) from a browser they used before.
DEVICE_COOKIE = "twinledger_device"
MAX_DEVICE_TOKENS = 5  # a browser shared by a family keeps each member's token


def trusted_device(session: Session, account: PortalAccount | None, tokens: list[str]) -> DeviceCookie | None:
    if account is None:
        return None
    for token in tokens:
        row = session.exec(select(DeviceCookie).where(DeviceCookie.token_hash == auth.hash_token(token))).first()
        if row is not None and row.account_id == account.id and aware(row.expires_at) > now():
            return row
    return None


def device_tokens(cookie: str | None) -> list[str]:
    return [t for t in (cookie or "").split(".") if 0 < len(t) <= 64][:MAX_DEVICE_TOKENS]


def password_matches(session: Session, account: PortalAccount | None, password: str) -> bool:
    """Whether the password is the account's; an unknown user name (None) costs the same scrypt time."""
    session.commit()  # no connection held during scrypt
    if account is None:
        security.burn_password_time(password)
        return False
    return security.verify_password(password, account.password_salt, account.password_hash)


def authenticate(session: Session, settings: PortalSettings, *, username: str, password: str, client_ip: str,
                 device_cookie: str | None = None) -> PortalAccount:
    """The account, if the password is right and no lockout applies: a trusted device (`device_cookie`) is
    limited by its own failures; any other client by the user name's and its address's failures."""
    account = session.exec(select(PortalAccount).where(PortalAccount.username == username)).first()
    device = trusted_device(session, account, device_tokens(device_cookie))
    if device is not None:
        if failures(session, settings, "device", str(device.id)) >= settings.max_failures_per_account:
            too_many(settings)
    else:
        check_rate_limit(session, settings, username=username, client_ip=client_ip)
    if not password_matches(session, account, password):
        if device is not None:
            session.add(LoginFailure(kind="device", subject=str(device.id)))
            session.commit()
        else:
            record_failure(session, username=username, client_ip=client_ip)
        raise PortalError("user name or password is not correct", status=401)
    session.exec(delete(LoginFailure).where(LoginFailure.kind == "account", LoginFailure.subject == username))
    session.commit()
    return account


def trust_device(session: Session, settings: PortalSettings, account: PortalAccount, device_cookie: str | None) -> str:
    """After a successful login: the device cookie's new value, holding a fresh token for this account (its
    earlier token for the account, if any, is replaced) beside the other accounts' tokens of the browser."""
    tokens = device_tokens(device_cookie)
    mine = trusted_device(session, account, tokens)
    if mine is not None:
        tokens = [t for t in tokens if auth.hash_token(t) != mine.token_hash]
        session.delete(mine)
    token = auth.new_secret()
    session.add(DeviceCookie(token_hash=auth.hash_token(token), account_id=account.id,
                             expires_at=now() + timedelta(seconds=settings.device_cookie_ttl_s)))
    session.commit()
    return ".".join([token, *tokens][:MAX_DEVICE_TOKENS])


def unlock_key(session: Session, settings: PortalSettings, account: PortalAccount, password: str, *,
               session_id) -> bytes:
    """The patient's sealed consent key, decrypted in memory (a scrypt) to be sealed again under a new password;
    wrong passwords count against this login session (`session_id`), never against the user name's logins.
    (Consent changes open the key wrapped for the session instead: node/portal/desk.py.)"""
    require_portal_key(account)
    check_password_attempts(session, settings, account, session_id)
    session.commit()  # no connection held during scrypt
    try:
        return security.open_key(account.sealed_key, account.key_salt, password, associated=account.pseudonym)
    except security.WrongPassword:
        record_password_failure(session, account, session_id)
        raise wrong_password() from None


def require_portal_key(account: PortalAccount) -> None:
    """409 for a patient whose consent key is in their own wallet: the portal cannot sign for them."""
    if account.key_custody == "wallet":
        raise PortalError("your consent key is in your wallet, not in the portal: sign the change with your wallet",
                          status=409)


def wrong_password() -> PortalError:
    return PortalError("the password is not correct", status=403)


def open_consent_key(account: PortalAccount, password: str, *, login: PortalSession | None, token: str) -> bytes:
    """The key wrapped for the login session (microseconds) when there is one, else the sealed key (a scrypt);
    security.WrongPassword when the password does not open it."""
    if login is not None and login.consent_key_wrap and token:
        return security.unwrap_for_session(login.consent_key_wrap, token, password, associated=account.pseudonym)
    return security.open_key(account.sealed_key, account.key_salt, password, associated=account.pseudonym)


@dataclass(frozen=True)
class NewSession:
    token: str
    csrf_token: str
    expires_at: datetime


def open_session(session: Session, settings: PortalSettings, account: PortalAccount, *, password: str = ""
                 ) -> NewSession:
    """A login session. With the (already checked) `password`, a portal-held consent key is opened once (a
    scrypt) and wrapped for this session, so that the session's changes need the password but no scrypt."""
    token, csrf = auth.new_secret(), auth.new_secret()
    expires = now() + timedelta(seconds=settings.session_ttl_s)
    wrap = None
    if password and account.key_custody != "wallet":
        session.commit()  # no connection held during scrypt
        try:
            key = security.open_key(account.sealed_key, account.key_salt, password, associated=account.pseudonym)
        except security.WrongPassword:  # a key sealed under another password: its changes say so, one by one
            key = None
        if key is not None:
            wrap = security.wrap_for_session(key, token, password, associated=account.pseudonym)
        del key
    session.add(PortalSession(token_hash=auth.hash_token(token), account_id=account.id, csrf_token=csrf,
                              expires_at=expires, consent_key_wrap=wrap))
    session.commit()
    return NewSession(token, csrf, expires)


def load_patients(session: Session, rows: list[PortalSession]) -> None:
    """The accounts of many sessions, read with one query (the Guard's `holders_of`: `patient_of` then finds
    each in the session's identity map)."""
    session.exec(select(PortalAccount).where(col(PortalAccount.id).in_({row.account_id for row in rows}))).all()


def patient_of(session: Session, row: PortalSession) -> tuple[PortalAccount, str, str] | None:
    """The patient a live portal session belongs to, for the web kit's Guard: (account, username, "patient")."""
    account = session.get(PortalAccount, row.account_id)
    return (account, account.username, "patient") if account is not None else None


def change_password(session: Session, settings: PortalSettings, account: PortalAccount, *, password: str,
                    new_password: str, session_id) -> None:
    """Re-seal the consent key under a new password (the key and its address stay the same), and end every other
    session of the patient: whoever knew the old password and logged in with it is logged out."""
    if account.key_custody == "wallet":
        check_password_attempts(session, settings, account, session_id)
        if not security.verify_password(password, account.password_salt, account.password_hash):
            record_password_failure(session, account, session_id)
            raise wrong_password()
        account.password_salt, account.password_hash = security.hash_password(new_password)
    else:
        key = unlock_key(session, settings, account, password, session_id=session_id)
        account.password_salt, account.password_hash = security.hash_password(new_password)
        account.key_salt, account.sealed_key = security.seal_key(key, new_password, associated=account.pseudonym)
    session.add(account)
    session.exec(delete(PortalSession).where(PortalSession.account_id == account.id, PortalSession.id != session_id))
    # This session's wrap is under the old password: its next change opens the newly sealed key instead.
    session.exec(update(PortalSession).where(PortalSession.id == session_id).values(consent_key_wrap=None))
    session.commit()
