"""`twinledger node backup` / `restore`: the whole node home (node.toml, node.db, keys, portal and console
settings, saved models) in one archive encrypted under a passphrase.

The archive is a tar of the home, node.db taken with SQLite's online backup API (a consistent copy even while
the node, portal or console write to it), encrypted with AES-256-GCM under a key derived from the passphrase by
scrypt (the `cryptography` package; nothing hand-written). The file is

    MAGIC | 4-byte big-endian header length | header (JSON: format, salt, scrypt n/r/p, nonce) | ciphertext

and the header is the ciphertext's associated data: changing a byte anywhere fails the decryption, which is
reported as a wrong passphrase or an altered archive, with nothing written.

The passphrase comes from a file (`--passphrase-file`) or the environment, never from the command line:
$TWINLEDGER_BACKUP_PASSPHRASE_FILE, then $TWINLEDGER_BACKUP_PASSPHRASE.

Restore writes into a new folder beside the home and renames it into place: a home that is not empty is
replaced only with `force`, and then kept as `<home>.before-restore-<time>` (nothing is lost). A restored
node.db may be older than the chain's record of the node's privacy spending: the node then refuses to train
(protocol code BUDGET_BEHIND_CHAIN, docs/node.md) rather than spend the same budget twice.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from contracts.keystore import KeystoreError, read_passphrase_file
from node.records.fhir_input import FhirFileError, check_depth
from node.settings import CONFIG_NAME, NodeSettings

MAGIC = b"TWINLEDGER-NODE-BACKUP\n"
FORMAT = 1
PASSPHRASE_ENV = "TWINLEDGER_BACKUP_PASSPHRASE"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # 32 MiB, a fraction of a second
MAX_SCRYPT_N = 2**20  # a crafted header cannot ask for more than 1 GiB
MAX_HEADER_BYTES = 4096
DATABASE_NAME = "node.db"
# SQLite's side files: the backup API's copy already holds what they hold.
SKIPPED_SUFFIXES = ("-wal", "-shm", "-journal")


class BackupError(ValueError):
    """A backup or restore that cannot go ahead; the message says why and what to do. Nothing was written."""


def backup_passphrase(passphrase_file: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The passphrase from `passphrase_file`, else $TWINLEDGER_BACKUP_PASSPHRASE_FILE, else
    $TWINLEDGER_BACKUP_PASSPHRASE."""
    environ = os.environ if environ is None else environ
    try:
        if passphrase_file is not None:
            return read_passphrase_file(Path(passphrase_file))
        if environ.get(f"{PASSPHRASE_ENV}_FILE"):
            return read_passphrase_file(Path(environ[f"{PASSPHRASE_ENV}_FILE"]))
    except KeystoreError as exc:
        raise BackupError(str(exc)) from None
    if environ.get(PASSPHRASE_ENV):
        return environ[PASSPHRASE_ENV]
    raise BackupError(f"a backup needs a passphrase: --passphrase-file FILE, or set {PASSPHRASE_ENV}_FILE "
                      f"(or {PASSPHRASE_ENV})")


def _key(passphrase: str, salt: bytes, *, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _database_path(settings: NodeSettings) -> Path:
    """The SQLite file of node.db; refuses a database the backup cannot copy consistently itself."""
    url = settings.resolved_database_url
    if not url.startswith("sqlite:///"):
        raise BackupError(f"the node's database is not a SQLite file ({url.split(':', 1)[0]}): back it up with the "
                          "database's own tools, and the home with this command after moving it aside")
    path = Path(url.removeprefix("sqlite:///")).resolve()
    if path != (settings.home / DATABASE_NAME).resolve():
        raise BackupError(f"the node's database {path} is outside its home: keep it at <home>/{DATABASE_NAME} "
                          "to back it up with the home")
    return path


def _database_copy(path: Path) -> bytes:
    """A consistent copy of the SQLite database at `path` (the backup API, not a file copy under writes)."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / DATABASE_NAME
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        target = sqlite3.connect(copy)
        try:
            with target:
                source.backup(target)
        finally:
            source.close()
            target.close()
        return copy.read_bytes()


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    archive.addfile(info, io.BytesIO(data))


def _home_tar(settings: NodeSettings) -> bytes:
    home = settings.home
    database = _database_path(settings)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(home.rglob("*")):
            name = path.relative_to(home).as_posix()
            if path.is_symlink() or name == DATABASE_NAME or name.endswith(SKIPPED_SUFFIXES):
                continue
            if path.is_dir():
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, path.stat().st_mode & 0o777
                archive.addfile(info)
            elif path.is_file():
                _add(archive, name, path.read_bytes(), path.stat().st_mode & 0o777)
        if database.exists():
            _add(archive, DATABASE_NAME, _database_copy(database), 0o600)
    return buffer.getvalue()


def backup_home(settings: NodeSettings, out: Path, *, passphrase: str) -> Path:
    """Write the encrypted archive of the node's home to `out` (owner-only; never overwrites a file)."""
    if not passphrase:
        raise BackupError("a backup needs a non-empty passphrase")
    out = Path(out).resolve()
    if out.exists():
        raise BackupError(f"{out} exists: a backup never overwrites a file")
    if out.is_relative_to(settings.home):
        raise BackupError(f"{out} is inside the home it backs up: write the backup elsewhere")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = json.dumps({"format": FORMAT, "kdf": "scrypt", "salt": salt.hex(), "n": SCRYPT_N, "r": SCRYPT_R,
                         "p": SCRYPT_P, "cipher": "aes-256-gcm", "nonce": nonce.hex()}).encode()
    key = _key(passphrase, salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    sealed = AESGCM(key).encrypt(nonce, _home_tar(settings), MAGIC + header)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(MAGIC + len(header).to_bytes(4, "big") + header + sealed)
        handle.flush()
        os.fsync(handle.fileno())
    os.link(partial, out)  # fails if `out` appeared meanwhile: still never overwritten
    partial.unlink()
    return out


def _open(archive: Path, passphrase: str) -> bytes:
    try:
        data = Path(archive).read_bytes()
    except OSError as exc:
        raise BackupError(f"cannot read the backup {archive}: {exc}") from None
    if not data.startswith(MAGIC):
        raise BackupError(f"{archive} is not a TwinLedger node backup")
    length = int.from_bytes(data[len(MAGIC):len(MAGIC) + 4], "big")
    if length > MAX_HEADER_BYTES:
        raise BackupError(f"{archive} is not a readable node backup: malformed header")
    header_bytes = data[len(MAGIC) + 4:len(MAGIC) + 4 + length]
    try:
        text = header_bytes.decode("utf-8")
        check_depth(text, source=str(archive), limit=2)  # a flat object: refused before the parser recurses
        header = json.loads(text)
        n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
        salt, nonce = bytes.fromhex(header["salt"]), bytes.fromhex(header["nonce"])
        if header["format"] != FORMAT or n > MAX_SCRYPT_N or n < 2 or n & (n - 1) or not 1 <= r <= 16 \
                or not 1 <= p <= 4 or len(nonce) != 12:
            raise ValueError("parameters out of bounds")
    except (ValueError, KeyError, TypeError, FhirFileError) as exc:
        raise BackupError(f"{archive} is not a readable node backup: malformed header ({exc})") from None
    try:
        return AESGCM(_key(passphrase, salt, n=n, r=r, p=p)).decrypt(
            nonce, data[len(MAGIC) + 4 + length:], MAGIC + header_bytes)
    except InvalidTag:
        raise BackupError(f"cannot open {archive}: wrong passphrase, or the archive was altered (nothing was "
                          "restored)") from None


def _extract(tar_bytes: bytes, into: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r") as archive:
        members = archive.getmembers()
        for member in members:
            if not (member.isfile() or member.isdir()):
                raise BackupError(f"the backup holds {member.name!r}, which is neither a file nor a folder")
        names = {m.name for m in members}
        if CONFIG_NAME not in names:
            raise BackupError(f"the backup holds no {CONFIG_NAME}: not a node home")
        archive.extractall(into, filter="data")  # refuses absolute paths, '..' and links out of the folder


def restore_home(archive: Path, home: Path, *, passphrase: str, force: bool = False) -> Path | None:
    """Restore the node home `home` from `archive`. Requires an empty or missing home, or `force` (the present
    home is then kept as `<home>.before-restore-<time>`, returned). Writes nothing unless the whole archive
    decrypts and unpacks."""
    home = Path(home).resolve()
    if home.exists() and any(home.iterdir()) and not force:
        raise BackupError(f"{home} is not empty: restore into a new home, or pass --force (the present home is "
                          "then kept beside it as <home>.before-restore-<time>)")
    tar_bytes = _open(archive, passphrase)
    empty = home.exists() and not any(home.iterdir())
    # An empty home (a fresh volume, a mount point) is filled from a folder inside it: renames stay on its device.
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{home.name}.restore-", dir=home if empty else home.parent))
    try:
        _extract(tar_bytes, staging)
    except (BackupError, tarfile.TarError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise exc if isinstance(exc, BackupError) else BackupError(f"the backup cannot be unpacked: {exc}") from None
    if empty:
        for entry in staging.iterdir():
            os.rename(entry, home / entry.name)
        staging.rmdir()
        home.chmod(0o700)
        return None
    staging.chmod(0o700)
    kept = None
    if home.exists():
        kept = home.with_name(f"{home.name}.before-restore-{time.strftime('%Y%m%dT%H%M%S')}")
        os.rename(home, kept)
    os.rename(staging, home)
    return kept
