"""Encrypted backups of a component's home (`twinledger node|coordinator|console backup` / `restore`), in one place.

The archive is a tar of the home, every SQLite database in it (found by its file header: node.db, console.db, a
SuperLink state.db kept there) taken with SQLite's online backup API (a consistent copy even while a service
writes to it), encrypted with AES-256-GCM under a key derived from the passphrase by scrypt (the `cryptography`
package; nothing hand-written). The file is

    MAGIC | 4-byte big-endian header length | header (JSON: format, salt, scrypt n/r/p, nonce) | ciphertext

and MAGIC and the header are the ciphertext's associated data: changing a byte anywhere fails the decryption,
which is reported as a wrong passphrase or an altered archive, with nothing written. Each kind of home has its
own MAGIC and a file every such home holds (`HomeKind`): a node's archive does not restore as a coordinator's.

The passphrase comes from a file (`--passphrase-file`) or the environment, never from the command line:
$TWINLEDGER_BACKUP_PASSPHRASE_FILE, then $TWINLEDGER_BACKUP_PASSPHRASE.

Restore writes into a new folder beside the home and renames it into place: a home that is not empty is
replaced only with `force`, and then kept as `<home>.before-restore-<time>` (nothing is lost).
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

FORMAT = 1
PASSPHRASE_ENV = "TWINLEDGER_BACKUP_PASSPHRASE"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # 32 MiB, a fraction of a second
MAX_SCRYPT_N = 2**20  # a crafted header cannot ask for more than 1 GiB
MAX_HEADER_BYTES = 4096
SQLITE_HEADER = b"SQLite format 3\x00"
# SQLite's side files: the backup API's copy already holds what they hold.
SKIPPED_SUFFIXES = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class HomeKind:
    """One kind of home: `name` for messages, the archive's `magic` first line, and `required`, the files every
    home of this kind holds (a restore refuses an archive without them)."""

    name: str
    magic: bytes
    required: tuple[str, ...]


class BackupError(ValueError):
    """A backup or restore that cannot go ahead; the message says why and what to do. Nothing was written."""


def backup_passphrase(passphrase_file: Path | None = None, environ: Mapping[str, str] | None = None, *,
                      read_file: Callable[[Path], str]) -> str:
    """The passphrase from `passphrase_file`, else $TWINLEDGER_BACKUP_PASSPHRASE_FILE, else
    $TWINLEDGER_BACKUP_PASSPHRASE. `read_file` reads a passphrase file, a ValueError saying what is wrong with it
    (the keystores' reader, contracts/keystore.py: given by the caller, as federation/ imports no other room)."""
    environ = os.environ if environ is None else environ
    try:
        if passphrase_file is not None:
            return read_file(Path(passphrase_file))
        if environ.get(f"{PASSPHRASE_ENV}_FILE"):
            return read_file(Path(environ[f"{PASSPHRASE_ENV}_FILE"]))
    except ValueError as exc:
        raise BackupError(str(exc)) from None
    if environ.get(PASSPHRASE_ENV):
        return environ[PASSPHRASE_ENV]
    raise BackupError(f"a backup needs a passphrase: --passphrase-file FILE, or set {PASSPHRASE_ENV}_FILE "
                      f"(or {PASSPHRASE_ENV})")


def _key(passphrase: str, salt: bytes, *, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _is_database(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def _database_copy(path: Path) -> bytes:
    """A consistent copy of the SQLite database at `path` (the backup API, not a file copy under writes)."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / path.name
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


def _home_tar(home: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(home.rglob("*")):
            name = path.relative_to(home).as_posix()
            if path.is_symlink() or name.endswith(SKIPPED_SUFFIXES):
                continue
            if path.is_dir():
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, path.stat().st_mode & 0o777
                archive.addfile(info)
            elif path.is_file():
                try:
                    mode = path.stat().st_mode & 0o777
                    if _is_database(path):
                        _add(archive, name, _database_copy(path), mode & 0o700)
                    else:
                        _add(archive, name, path.read_bytes(), mode)
                except FileNotFoundError:  # removed while the backup ran (a run's temporary file): not in it
                    continue
                except (OSError, sqlite3.Error) as exc:
                    raise BackupError(f"cannot read {path} for the backup ({exc}); nothing was written") from None
    return buffer.getvalue()


def backup_home(home: Path, out: Path, *, kind: HomeKind, passphrase: str) -> Path:
    """Write the encrypted archive of `home` to `out` (owner-only; never overwrites a file)."""
    if not passphrase:
        raise BackupError("a backup needs a non-empty passphrase")
    home, out = Path(home).resolve(), Path(out).resolve()
    missing = [name for name in kind.required if not (home / name).is_file()]
    if missing:
        raise BackupError(f"{home} is not a {kind.name} home: it holds no {', '.join(missing)}")
    if out.exists():
        raise BackupError(f"{out} exists: a backup never overwrites a file")
    if out.is_relative_to(home):
        raise BackupError(f"{out} is inside the home it backs up: write the backup elsewhere")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = json.dumps({"format": FORMAT, "kdf": "scrypt", "salt": salt.hex(), "n": SCRYPT_N, "r": SCRYPT_R,
                         "p": SCRYPT_P, "cipher": "aes-256-gcm", "nonce": nonce.hex()}).encode()
    key = _key(passphrase, salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    sealed = AESGCM(key).encrypt(nonce, _home_tar(home), kind.magic + header)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(kind.magic + len(header).to_bytes(4, "big") + header + sealed)
        handle.flush()
        os.fsync(handle.fileno())
    os.link(partial, out)  # fails if `out` appeared meanwhile: still never overwritten
    partial.unlink()
    return out


def _open(archive: Path, kind: HomeKind, passphrase: str) -> bytes:
    try:
        data = Path(archive).read_bytes()
    except OSError as exc:
        raise BackupError(f"cannot read the backup {archive}: {exc}") from None
    magic = kind.magic
    if not data.startswith(magic):
        raise BackupError(f"{archive} is not a TwinLedger {kind.name} backup")
    length = int.from_bytes(data[len(magic):len(magic) + 4], "big")
    if length > MAX_HEADER_BYTES:
        raise BackupError(f"{archive} is not a readable {kind.name} backup: malformed header")
    header_bytes = data[len(magic) + 4:len(magic) + 4 + length]
    try:
        text = header_bytes.decode("utf-8")
        if text.count("{") != 1 or "[" in text:  # a flat object: refused before the parser recurses
            raise ValueError("not one flat JSON object")
        header = json.loads(text)
        n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
        salt, nonce = bytes.fromhex(header["salt"]), bytes.fromhex(header["nonce"])
        if header["format"] != FORMAT or n > MAX_SCRYPT_N or n < 2 or n & (n - 1) or not 1 <= r <= 16 \
                or not 1 <= p <= 4 or len(nonce) != 12:
            raise ValueError("parameters out of bounds")
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{archive} is not a readable {kind.name} backup: malformed header ({exc})") from None
    try:
        return AESGCM(_key(passphrase, salt, n=n, r=r, p=p)).decrypt(
            nonce, data[len(magic) + 4 + length:], magic + header_bytes)
    except InvalidTag:
        raise BackupError(f"cannot open {archive}: wrong passphrase, or the archive was altered (nothing was "
                          "restored)") from None


def _extract(tar_bytes: bytes, into: Path, kind: HomeKind) -> None:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r") as archive:
        members = archive.getmembers()
        for member in members:
            if not (member.isfile() or member.isdir()):
                raise BackupError(f"the backup holds {member.name!r}, which is neither a file nor a folder")
        names = {m.name for m in members}
        missing = [name for name in kind.required if name not in names]
        if missing:
            raise BackupError(f"the backup holds no {', '.join(missing)}: not a {kind.name} home")
        archive.extractall(into, filter="data")  # refuses absolute paths, '..' and links out of the folder


def restore_home(archive: Path, home: Path, *, kind: HomeKind, passphrase: str, force: bool = False) -> Path | None:
    """Restore `home` from `archive`. Requires an empty or missing home, or `force` (the present home is then kept
    as `<home>.before-restore-<time>`, returned). Writes nothing unless the whole archive decrypts and unpacks."""
    home = Path(home).resolve()
    if home.exists() and any(home.iterdir()) and not force:
        raise BackupError(f"{home} is not empty: restore into a new home, or pass --force (the present home is "
                          "then kept beside it as <home>.before-restore-<time>)")
    tar_bytes = _open(archive, kind, passphrase)
    empty = home.exists() and not any(home.iterdir())
    # An empty home (a fresh volume, a mount point) is filled from a folder inside it: renames stay on its device.
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{home.name}.restore-", dir=home if empty else home.parent))
    try:
        _extract(tar_bytes, staging, kind)
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


PASSPHRASE_HELP = ("a file holding the archive's passphrase on its first line (default: "
                   f"${PASSPHRASE_ENV}_FILE, else ${PASSPHRASE_ENV})")


def add_archive_commands(actions, *, command: str, contents: str, home_help: str, stop_first: str,
                         backup, restore) -> None:
    """`backup --home H --out FILE` and `restore --home H ARCHIVE` in a command group (`actions`) of
    `twinledger <command>`; `backup` and `restore` are their handlers."""
    archive = actions.add_parser("backup", help=f"write the {contents} to an archive encrypted with a passphrase")
    archive.add_argument("--home", required=True, help=home_help)
    archive.add_argument("--out", required=True, help="the archive to write (never overwritten)")
    archive.add_argument("--passphrase-file", help=PASSPHRASE_HELP)
    archive.set_defaults(func=backup)
    back = actions.add_parser("restore", help=f"restore a home from an archive of 'twinledger {command} backup' "
                              f"(stop {stop_first} first)")
    back.add_argument("--home", required=True, help=home_help + " (empty or missing, unless --force)")
    back.add_argument("--passphrase-file", help=PASSPHRASE_HELP)
    back.add_argument("--force", action="store_true",
                      help="replace a home that is not empty (it is kept as <home>.before-restore-<time>)")
    back.add_argument("archive", help="the backup archive")
    back.set_defaults(func=restore)

