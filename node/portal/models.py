"""The portal's tables, in the node's database (created and upgraded by its migrations, node/migrations).

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
    # "portal": the key is sealed below under the password; "wallet": only the patient's wallet holds it.
    key_custody: str = Field(default="portal")
    password_salt: bytes
    password_hash: bytes  # scrypt(password, password_salt)
    key_salt: bytes  # scrypt(password, key_salt) is the AES-256-GCM key that seals the consent key (empty: wallet)
    sealed_key: bytes  # 12-byte nonce + AES-256-GCM(consent private key), associated data: the pseudonym (empty: wallet)
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
    # The consent key wrapped for this session (security.wrap_for_session: the cookie's token and the password);
    # None for a wallet's patient or a session opened before wraps existed (the sealed key is opened then).
    consent_key_wrap: bytes | None = None


class DeviceCookie(SQLModel, table=True):
    """A browser that logged in to this account before (OWASP's device cookies): failed logins from it count
    against it alone, and the lockout of untrusted clients does not reach it."""

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(index=True, unique=True)  # sha256 of the cookie's token
    account_id: int = Field(index=True)
    expires_at: datetime
    created_at: datetime = Field(default_factory=now)


class LoginFailure(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)  # "account", "ip" (untrusted logins), "device" (a device cookie's), "session", "door"
    subject: str = Field(index=True)  # the username tried, the client address, the device cookie's row id, "user|client"
    at: datetime = Field(default_factory=now, index=True)


class ConsentRelay(SQLModel, table=True):
    """The outbox: a grant or revocation the patient signed, kept until the chain records it or refuses it.

    A request stores the signed change here and answers at once ("sent"); the relay worker (node.portal.relays)
    sends what is waiting in batches and marks each "recorded" (block, transaction) or "failed" (reason). The
    signature is kept, so that a portal that stops with changes on their way sends them when it starts again."""

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(index=True)
    study_id: str
    action: str  # "grant" or "revoke"
    status: str = Field(default="sent", index=True)
    block: int | None = None
    tx_hash: str | None = None
    reason: str | None = None  # why it failed, in words a patient can read
    failure_status: int | None = None  # the HTTP status the failure maps to (409 refused, 503 chain unavailable)
    created_at: datetime = Field(default_factory=now)
    finished_at: datetime | None = None
    # The signed change itself (what the worker relays); empty in rows from before the outbox.
    pseudonym: str | None = None
    nonce: int | None = None
    deadline: int | None = None
    valid_from: int | None = None  # grants only
    valid_until: int | None = None
    signature: str | None = None  # 0x-hex, 65 bytes
    attempts: int = 0  # sends the chain did not answer (tried again until the signature's deadline)
    waiting: str | None = None  # why it is still waiting, for the patient (the ledger cannot be reached, say)


OUTBOX_COLUMNS = {"pseudonym": "VARCHAR", "nonce": "BIGINT", "deadline": "BIGINT", "valid_from": "BIGINT",
                  "valid_until": "BIGINT", "signature": "VARCHAR", "attempts": "INTEGER NOT NULL DEFAULT 0",
                  "waiting": "VARCHAR"}


def upgrade(engine) -> None:
    """Bring a portal database created before wallet-held keys, or before the outbox, to the migrations' baseline
    (create_all adds no columns; node/migrations calls this before stamping such a database)."""
    from sqlalchemy import inspect, text

    columns = {c["name"] for c in inspect(engine).get_columns("portalaccount")}
    if "key_custody" not in columns:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE portalaccount ADD COLUMN key_custody VARCHAR NOT NULL DEFAULT 'portal'"))
    inspector = inspect(engine)
    if inspector.has_table("consentrelay"):
        present = {c["name"] for c in inspector.get_columns("consentrelay")}
        with engine.begin() as connection:
            for name, kind in OUTBOX_COLUMNS.items():
                if name not in present:
                    connection.execute(text(f"ALTER TABLE consentrelay ADD COLUMN {name} {kind}"))
