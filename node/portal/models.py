"""The portal's tables, in the node's database (created on the node's engine with create_all).

Secrets are stored only as hashes (enrolment codes, session tokens) or encrypted under the patient's
password (the consent key).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlmodel import Field, SQLModel


def now() -> datetime:
    return datetime.now(timezone.utc)


class PortalAccount(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(index=True, unique=True)
    record_number: str = Field(index=True, unique=True)  # node.store.Patient.record_number
    pseudonym: str = Field(index=True, unique=True)
    consent_address: str  # the address of the patient's consent key, enrolled on chain
    password_salt: bytes
    password_hash: bytes  # scrypt(password, password_salt)
    key_salt: bytes  # scrypt(password, key_salt) is the AES-256-GCM key that seals the consent key
    sealed_key: bytes  # 12-byte nonce + AES-256-GCM(consent private key), associated data: the pseudonym
    created_at: datetime = Field(default_factory=now)


class EnrolmentCode(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code_hash: str = Field(index=True, unique=True)  # sha256 of the code; the code itself is shown once
    record_number: str = Field(index=True)
    expires_at: datetime
    used_at: datetime | None = None
    created_at: datetime = Field(default_factory=now)


class PortalSession(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(index=True, unique=True)  # sha256 of the cookie's token
    account_id: int = Field(index=True)
    csrf_token: str
    expires_at: datetime
    last_seen: datetime = Field(default_factory=now)


class LoginFailure(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)  # "account" or "ip"
    subject: str = Field(index=True)  # the username tried, or the client address
    at: datetime = Field(default_factory=now, index=True)
