"""Passwords, the patient's sealed consent key, enrolment codes: standard library scrypt and AES-256-GCM
(session tokens, their hashes and constant-time comparison are the web kit's: federation.web.auth).

A login also wraps the consent key for its session (`wrap_for_session`): under a key derived with HKDF from the
session's cookie token and the password. The database holds the wrap and only the token's hash, so neither the
database alone nor a stolen cookie alone opens it; a change still needs the password, and costs microseconds
instead of a scrypt."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
NONCE_BYTES = 12
SESSION_WRAP_INFO = b"twinledger portal: consent key for one session"


class WrongPassword(Exception):
    """The password does not open the patient's key."""


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)


def _seal(key: bytes, plaintext: bytes, *, associated: str) -> bytes:
    """AES-256-GCM under `key`, a fresh nonce in front; `associated` (the pseudonym) binds it to its account."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated.encode())


def _open(key: bytes, sealed: bytes, *, associated: str) -> bytes:
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated.encode())
    except (InvalidTag, ValueError):
        raise WrongPassword("the password is not correct") from None


def hash_password(password: str) -> tuple[bytes, bytes]:
    salt = secrets.token_bytes(SALT_BYTES)
    return salt, _scrypt(password, salt)


def verify_password(password: str, salt: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(_scrypt(password, salt), expected)


def burn_password_time(password: str) -> None:
    """Spend the time of one password check, so that unknown usernames answer as slowly as known ones."""
    _scrypt(password, b"\0" * SALT_BYTES)


def seal_key(private_key: bytes, password: str, *, associated: str) -> tuple[bytes, bytes]:
    """Encrypt a consent key under a key derived from the password; returns (key_salt, sealed)."""
    salt = secrets.token_bytes(SALT_BYTES)
    return salt, _seal(_scrypt(password, salt), private_key, associated=associated)


def open_key(sealed: bytes, salt: bytes, password: str, *, associated: str) -> bytes:
    return _open(_scrypt(password, salt), sealed, associated=associated)


def _session_key(token: str, password: str) -> bytes:
    material = token.encode("utf-8") + b"\0" + password.encode("utf-8")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SESSION_WRAP_INFO).derive(material)


def wrap_for_session(private_key: bytes, token: str, password: str, *, associated: str) -> bytes:
    """The consent key encrypted for one login session: `token` is the session cookie's secret."""
    return _seal(_session_key(token, password), private_key, associated=associated)


def unwrap_for_session(wrapped: bytes, token: str, password: str, *, associated: str) -> bytes:
    return _open(_session_key(token, password), wrapped, associated=associated)


def new_enrolment_code() -> str:
    """Twenty characters in groups of five, from an alphabet without look-alikes (about 100 bits)."""
    alphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(20))
    return "-".join(raw[i : i + 5] for i in range(0, 20, 5))


def normalise_code(code: str) -> str:
    return code.strip().upper().replace(" ", "").replace("-", "")
