"""The tables both consoles keep: role tokens (hashed), login sessions, the action log."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel


def now() -> datetime:
    return datetime.now(timezone.utc)


def aware(moment: datetime) -> datetime:
    """SQLite gives naive datetimes back; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class AccessToken(SQLModel, table=True):
    __tablename__ = "web_access_token"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)  # who holds it: a person or a service
    role: str
    token_hash: str = Field(index=True, unique=True)  # sha256 of the token; the token is shown once
    created_at: datetime = Field(default_factory=now)
    revoked_at: datetime | None = None


class WebSession(SQLModel, table=True):
    __tablename__ = "web_session"
    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(index=True, unique=True)  # sha256 of the cookie's value
    access_token_id: int = Field(index=True)
    csrf_token: str
    expires_at: datetime
    last_seen: datetime = Field(default_factory=now)


class ActionLog(SQLModel, table=True):
    __tablename__ = "web_action_log"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=now, index=True)
    actor: str = Field(index=True)  # token name, or "anonymous" for a failed login
    role: str = ""
    action: str = Field(index=True)  # e.g. "login", "study.create", "run.launch", "run.stop", "download"
    target: str = ""
    outcome: str = "ok"  # "ok", "refused" or "failed"
    detail: str = ""
    client: str = ""  # the client's address


TABLES = [AccessToken.__table__, WebSession.__table__, ActionLog.__table__]


def create_tables(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine, tables=TABLES)
