"""`twinledger node backup` / `restore`: the whole node home (node.toml, node.db, keys, portal and console
settings, saved models) in one archive encrypted under a passphrase (federation/backup.py: scrypt + AES-256-GCM,
SQLite's backup API, nothing written on a wrong passphrase or a changed byte, no home overwritten without force).

A restored node.db may be older than the chain's record of the node's privacy spending: the node then refuses to
train (protocol code BUDGET_BEHIND_CHAIN, docs/node.md) rather than spend the same budget twice.
"""

from __future__ import annotations

from pathlib import Path

from collections.abc import Mapping

from contracts.keystore import read_passphrase_file
from federation import backup as archive
from federation.backup import BackupError, HomeKind
from node.settings import CONFIG_NAME, NodeSettings

__all__ = ["BackupError", "MAGIC", "NODE_HOME", "backup_home", "backup_passphrase", "restore_home"]

MAGIC = b"TWINLEDGER-NODE-BACKUP\n"
NODE_HOME = HomeKind(name="node", magic=MAGIC, required=(CONFIG_NAME,))
DATABASE_NAME = "node.db"


def backup_passphrase(passphrase_file: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The archive's passphrase: --passphrase-file, else $TWINLEDGER_BACKUP_PASSPHRASE_FILE, else
    $TWINLEDGER_BACKUP_PASSPHRASE."""
    return archive.backup_passphrase(passphrase_file, environ, read_file=read_passphrase_file)


def _check_database(settings: NodeSettings) -> None:
    """Refuses a database the backup cannot copy consistently itself: not SQLite, or outside the home."""
    url = settings.resolved_database_url
    if not url.startswith("sqlite:///"):
        raise BackupError(f"the node's database is not a SQLite file ({url.split(':', 1)[0]}): back it up with the "
                          "database's own tools, and the home with this command after moving it aside")
    path = Path(url.removeprefix("sqlite:///")).resolve()
    if path != (settings.home / DATABASE_NAME).resolve():
        raise BackupError(f"the node's database {path} is outside its home: keep it at <home>/{DATABASE_NAME} "
                          "to back it up with the home")


def backup_home(settings: NodeSettings, out: Path, *, passphrase: str) -> Path:
    """Write the encrypted archive of the node's home to `out` (owner-only; never overwrites a file)."""
    _check_database(settings)
    return archive.backup_home(settings.home, out, kind=NODE_HOME, passphrase=passphrase)


def restore_home(archive_path: Path, home: Path, *, passphrase: str, force: bool = False) -> Path | None:
    """Restore the node home `home` from `archive_path` (see federation.backup.restore_home)."""
    return archive.restore_home(archive_path, home, kind=NODE_HOME, passphrase=passphrase, force=force)
