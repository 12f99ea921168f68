"""Role tokens, sessions and CSRF tokens, and the action log, as plain functions over a sqlmodel Session.

Tokens are 256-bit random strings, so one SHA-256 is enough to store them (no password KDF needed);
comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, func, select

from federation.web.models import AccessToken, ActionLog, WebSession, aware, now

TOKEN_PREFIX = "tl_"
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,63}$"


class TokenError(ValueError):
    """A token cannot be created as asked (bad name or role, name taken)."""


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def create_token(db: Session, *, name: str, role: str, roles: tuple[str, ...] | None = None) -> str:
    """A new token for `name` with `role` (one of `roles` when given); returns the token, stores its hash."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise TokenError(f"a token name is 2 to 64 lower-case letters, digits, '.', '_' or '-', got {name!r}")
    if roles is not None and role not in roles:
        raise TokenError(f"unknown role {role!r}; roles: {', '.join(roles)}")
    if db.exec(select(AccessToken).where(AccessToken.name == name)).first():
        raise TokenError(f"a token named {name!r} exists already; revoke it first or choose another name")
    token = TOKEN_PREFIX + new_secret()
    db.add(AccessToken(name=name, role=role, token_hash=hash_token(token)))
    db.commit()
    return token


def revoke_token(db: Session, name: str) -> bool:
    """Revoke the token of `name` and end its sessions; False if there is none."""
    row = db.exec(select(AccessToken).where(AccessToken.name == name)).first()
    if row is None:
        return False
    db.delete(row)
    for session in db.exec(select(WebSession).where(WebSession.access_token_id == row.id)).all():
        db.delete(session)
    db.commit()
    return True


def token_holder(db: Session, token: str) -> AccessToken | None:
    """The holder of a token, or None for an unknown or revoked one."""
    if not token or len(token) > 200:
        return None
    row = db.exec(select(AccessToken).where(AccessToken.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None or not same(row.token_hash, hash_token(token)):
        return None
    return row


@dataclass(frozen=True)
class OpenedSession:
    cookie_token: str  # goes into the HttpOnly cookie; only its hash is stored
    csrf_token: str  # goes into every form (hidden field) or X-CSRF-Token header
    expires_at: datetime


def open_session(db: Session, holder: AccessToken, *, ttl_s: int) -> OpenedSession:
    cookie, csrf = new_secret(), new_secret()
    expires = now() + timedelta(seconds=ttl_s)
    db.add(WebSession(token_hash=hash_token(cookie), access_token_id=holder.id, csrf_token=csrf, expires_at=expires))
    db.commit()
    return OpenedSession(cookie, csrf, expires)


LAST_SEEN_STEP_S = 60


def live_session(db: Session, table, cookie_token: str | None, *, idle_s: int):
    """The live row of a cookie in a session table (WebSession, or any table with token_hash, expires_at and
    last_seen); an expired or idle row is deleted and None returned (`live_sessions` for one cookie)."""
    return live_sessions(db, table, [cookie_token], idle_s=idle_s).get(cookie_token or "")


def live_sessions(db: Session, table, cookie_tokens: list[str | None], *, idle_s: int) -> dict:
    """The live rows of many cookies, read with one query: {cookie token: row} (unknown, expired and idle ones
    left out; expired and idle rows deleted). A live row has its last_seen moved on once it is a tenth of the
    idle time old (at most a minute): every write to the database is a serialised fsync, and a session ends at
    most that step early. At most one commit, for all of them."""
    hashes = {hash_token(t): t for t in cookie_tokens if t and len(t) <= 200}
    if not hashes:
        return {}
    rows = db.exec(select(table).where(col(table.token_hash).in_(list(hashes)))).all()
    moment, live, written = now(), {}, False
    for row in rows:
        if aware(row.expires_at) <= moment or aware(row.last_seen) + timedelta(seconds=idle_s) <= moment:
            db.delete(row)
            written = True
            continue
        if aware(row.last_seen) + timedelta(seconds=min(LAST_SEEN_STEP_S, idle_s / 10)) <= moment:
            row.last_seen = moment
            db.add(row)
            written = True
        live[hashes[row.token_hash]] = row
    if written:
        db.commit()
    return live


def close_session(db: Session, session: WebSession) -> None:
    db.delete(session)
    db.commit()


def csrf_ok(given: str | None, session) -> bool:
    return bool(given) and same(given, session.csrf_token)


def record(db: Session, *, actor: str, action: str, role: str = "", target: str = "", outcome: str = "ok",
           detail: str = "", client: str = "") -> ActionLog:
    """Append one entry to the action log (who, when, what, outcome)."""
    entry = ActionLog(actor=actor[:64], role=role, action=action, target=target[:200], outcome=outcome,
                      detail=detail[:1000], client=client[:64])
    db.add(entry)
    db.commit()
    db.refresh(entry)
    return entry


def recent_failures(db: Session, *, client: str, window_s: int, action: str = "login") -> int:
    """Failed `action`s from `client` within the last `window_s` seconds (for rate limiting logins)."""
    since = now() - timedelta(seconds=window_s)
    query = select(func.count()).select_from(ActionLog).where(
        ActionLog.action == action, ActionLog.outcome != "ok", ActionLog.client == client, ActionLog.at >= since
    )
    return int(db.exec(query).one())


def activity(db: Session, *, limit: int = 200, offset: int = 0) -> list[ActionLog]:
    """The newest entries of the action log first."""
    return list(db.exec(select(ActionLog).order_by(ActionLog.id.desc()).offset(offset).limit(limit)).all())
