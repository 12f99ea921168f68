"""Chain keys (hospital, coordinator, operator) in encrypted keystores: the standard Ethereum keystore JSON
(version 3, scrypt and AES-128-CTR, what geth, Foundry's `cast wallet` and MetaMask read and write), encrypted
and decrypted by eth-account (`Account.encrypt` / `Account.decrypt`): no cryptography of our own.

    write_keystore(path, passphrase)                  a new key, encrypted; returns its 0x hex
    read_keystore(path, passphrase)                   the key's 0x hex
    load_key_file(path, role="hospital")              a keystore (passphrase from the environment) or a legacy
                                                      plaintext hex file
    encrypt_key_file(path, passphrase)                turn a legacy plaintext key file into a keystore, in place
    create_key_file(path, role=...)                   a new key for `node init`, `coordinator init`, `chain
                                                      deploy`: a keystore under the role's passphrase from the
                                                      environment, plaintext hex only when asked (development)

The passphrase comes from a file or from the environment, never from the command line (where `ps` shows it):
`passphrase_for(role)` reads, first found wins, `$TWINLEDGER_<ROLE>_KEY_PASSPHRASE_FILE`,
`$TWINLEDGER_<ROLE>_KEY_PASSPHRASE`, `$TWINLEDGER_KEY_PASSPHRASE_FILE`, `$TWINLEDGER_KEY_PASSPHRASE`
(ROLE: HOSPITAL, COORDINATOR or OPERATOR). A passphrase file holds the passphrase on its first line; one
trailing newline is not part of it. In a container the file is a mounted secret.

Decrypting with the standard scrypt parameters takes seconds (that is the point): load a key once per process.
A keystore is read defensively: at most 64 KiB, JSON at most 8 levels deep (py_ecc, imported with eth-account,
raises the recursion limit so far that deeper JSON would crash the interpreter rather than raise), and KDF
parameters bounded so that a crafted file cannot make the decryption take all memory or hours.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from eth_account import Account

from federation.ids import hex0x

ROLES = ("hospital", "coordinator", "operator")
GENERIC_PASSPHRASE_ENV = "TWINLEDGER_KEY_PASSPHRASE"
MAX_KEYSTORE_BYTES = 64 * 1024
MAX_JSON_DEPTH = 8
# Bounds on what a keystore may ask the decryption to spend; the standard parameters are scrypt n=2**18, r=8,
# p=1 (256 MiB, seconds) and pbkdf2 c=1,000,000.
MAX_SCRYPT_MEMORY_BYTES = 1024 * 1024 * 1024
MAX_SCRYPT_P = 4
MAX_PBKDF2_ROUNDS = 10_000_000


class KeystoreError(ValueError):
    """A keystore or its passphrase is missing, malformed or wrong; the message says which and where."""


def passphrase_env_names(role: str | None) -> tuple[str, ...]:
    """The environment variables `passphrase_for(role)` reads, in order: the role's own, then the shared ones
    (only the shared ones for role None: a key whose role the reader does not know)."""
    if role is None:
        return (f"{GENERIC_PASSPHRASE_ENV}_FILE", GENERIC_PASSPHRASE_ENV)
    if role not in ROLES:
        raise KeystoreError(f"unknown key role {role!r}: one of {', '.join(ROLES)}")
    own = f"TWINLEDGER_{role.upper()}_KEY_PASSPHRASE"
    return (f"{own}_FILE", own, f"{GENERIC_PASSPHRASE_ENV}_FILE", GENERIC_PASSPHRASE_ENV)


def read_passphrase_file(path: Path) -> str:
    """The passphrase in `path`: its first line without the line ending. Refuses an empty one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeystoreError(f"no passphrase file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeystoreError(f"cannot read the passphrase file {path}: {exc}") from None
    passphrase = text.split("\n", 1)[0].removesuffix("\r")
    if not passphrase:
        raise KeystoreError(f"the passphrase file {path} is empty")
    return passphrase


def passphrase_for(role: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The passphrase of `role`'s keystore from the environment (file variables first), or None if none is set."""
    environ = os.environ if environ is None else environ
    for name in passphrase_env_names(role):
        value = environ.get(name)
        if not value:
            continue
        if name.endswith("_FILE"):
            return read_passphrase_file(Path(value))
        return value
    return None


def _check_passphrase(passphrase: str) -> None:
    if not isinstance(passphrase, str) or not passphrase:
        raise KeystoreError("a keystore needs a non-empty passphrase")


def write_keystore(path: Path, passphrase: str, private_key: str | bytes | None = None, *,
                   kdf: str = "scrypt", iterations: int | None = None) -> str:
    """Encrypt `private_key` (a new random key when None) into a keystore at `path`, owner-only (0600).

    Requires: `path` does not exist (a key is never overwritten); a non-empty passphrase. `kdf` and `iterations`
    are eth-account's (None: its standard cost; tests pass small ones). Returns the key as 0x hex.
    """
    _check_passphrase(passphrase)
    key = private_key if private_key is not None else secrets.token_bytes(32)
    try:
        keystore = Account.encrypt(key, passphrase, kdf=kdf, iterations=iterations)
    except (ValueError, TypeError) as exc:
        raise KeystoreError(f"cannot encrypt this key: {exc}") from None
    _write_new_key_file(Path(path), json.dumps(keystore))
    return hex0x(Account.from_key(key).key)


def _write_new_key_file(path: Path, text: str) -> None:
    """`text` and a newline into the new owner-only file `path` (in an owner-only folder); never overwrites."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeystoreError(f"{path} exists: a key file is never overwritten") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


def create_key_file(path: Path, *, role: str, plaintext: bool = False, environ: Mapping[str, str] | None = None) -> str:
    """A new random key at `path` (never overwriting one), for the commands that create a party's key: a keystore
    encrypted under `passphrase_for(role)`; without a passphrase in the environment, KeystoreError naming the
    variables. `plaintext` writes the legacy hex file instead (development only: `--plaintext-key`; load_key
    warns about it). Returns the key as 0x hex."""
    if plaintext:
        key = hex0x(secrets.token_bytes(32))
        _write_new_key_file(Path(path), key)
        return key
    passphrase = passphrase_for(role, environ)
    if passphrase is None:
        names = passphrase_env_names(role)
        raise KeystoreError(f"the new {role} key at {path} is written encrypted: set {names[0]} to a file holding its "
                            f"passphrase (or {' or '.join(names[1:])}); --plaintext-key writes it unencrypted, for "
                            "development only")
    return write_keystore(path, passphrase)


def _json_depth(text: str) -> int:
    """The deepest nesting of objects and arrays in `text`, brackets inside strings not counted."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _check_kdf(path: Path, crypto: Mapping) -> None:
    kdf, params = crypto.get("kdf"), crypto.get("kdfparams")
    if not isinstance(params, Mapping):
        raise KeystoreError(f"{path} is not a keystore: no kdfparams")
    try:
        if kdf == "scrypt":
            n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
            if n < 2 or n & (n - 1) or r < 1 or p < 1 or p > MAX_SCRYPT_P or 128 * n * r > MAX_SCRYPT_MEMORY_BYTES:
                raise KeystoreError(f"{path}: scrypt parameters out of bounds (n={n}, r={r}, p={p})")
        elif kdf == "pbkdf2":
            rounds = int(params["c"])
            if not 1 <= rounds <= MAX_PBKDF2_ROUNDS:
                raise KeystoreError(f"{path}: pbkdf2 rounds out of bounds ({rounds})")
        else:
            raise KeystoreError(f"{path}: unsupported key derivation {kdf!r} (scrypt or pbkdf2)")
        if int(params.get("dklen", 32)) != 32:
            raise KeystoreError(f"{path}: derived key length must be 32")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, KeystoreError):
            raise
        raise KeystoreError(f"{path}: malformed kdfparams ({exc})") from None


def _parse(path: Path, text: str) -> dict:
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise KeystoreError(f"{path} is not a keystore: JSON nested too deeply")
    try:
        keystore = json.loads(text)
    except ValueError:
        raise KeystoreError(f"{path} is not a keystore: not JSON") from None
    crypto = keystore.get("crypto", keystore.get("Crypto")) if isinstance(keystore, dict) else None
    if not isinstance(crypto, dict) or keystore.get("version") != 3:
        raise KeystoreError(f"{path} is not a version 3 Ethereum keystore")
    _check_kdf(path, crypto)
    return keystore


def _read_text(path: Path) -> str:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_KEYSTORE_BYTES:
            raise KeystoreError(f"{path} is too large for a key file ({size} bytes)")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeystoreError(f"no key file at {path}") from None
    except UnicodeDecodeError:
        raise KeystoreError(f"{path} is not a key file: not text") from None
    except OSError as exc:
        raise KeystoreError(f"cannot read the key file {path}: {exc}") from None


def is_keystore(path: Path) -> bool:
    """Whether `path` holds a keystore (JSON) rather than a legacy plaintext hex key."""
    return _read_text(path).lstrip().startswith("{")


def read_keystore(path: Path, passphrase: str) -> str:
    """Decrypt the keystore at `path`; returns the key as 0x hex. Wrong passphrase: KeystoreError saying so."""
    _check_passphrase(passphrase)
    keystore = _parse(Path(path), _read_text(path))
    try:
        key = Account.decrypt(keystore, passphrase)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise KeystoreError(f"wrong passphrase for the keystore {path}") from None
        raise KeystoreError(f"{path} is not a readable keystore: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise KeystoreError(f"{path} is not a readable keystore: missing or malformed {exc}") from None
    return hex0x(bytes(key))


def load_key_file(path: Path, *, role: str | None, passphrase: str | None = None,
                  environ: Mapping[str, str] | None = None) -> str:
    """The private key in `path` as 0x hex: a keystore, decrypted with `passphrase` or `passphrase_for(role)`,
    or a legacy plaintext hex file (read as before, so existing homes keep working until encrypted).
    """
    path = Path(path)
    text = _read_text(path)
    if not text.lstrip().startswith("{"):
        return text.strip()
    if passphrase is None:
        passphrase = passphrase_for(role, environ)
    if passphrase is None:
        names = passphrase_env_names(role)
        raise KeystoreError(f"{path} is an encrypted keystore: set {names[0]} to a file holding its passphrase "
                            f"(or {' or '.join(names[1:])})")
    return read_keystore(path, passphrase)


def encrypt_key_file(path: Path, passphrase: str, *, kdf: str = "scrypt", iterations: int | None = None) -> str:
    """Replace the legacy plaintext key file `path` by a keystore of the same key (owner-only, atomically).

    Requires: `path` holds a plaintext hex key (a keystore is refused: nothing to do). Returns the account address.
    """
    path = Path(path)
    text = _read_text(path)
    if text.lstrip().startswith("{"):
        raise KeystoreError(f"{path} is already a keystore")
    try:
        account = Account.from_key(text.strip())
    except (ValueError, TypeError):
        raise KeystoreError(f"{path} does not hold a hex private key") from None
    tmp = path.with_name(f".{path.name}.keystore.tmp")
    tmp.unlink(missing_ok=True)
    write_keystore(tmp, passphrase, account.key, kdf=kdf, iterations=iterations)
    os.replace(tmp, path)
    return account.address
