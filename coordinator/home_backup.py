"""`twinledger coordinator backup|restore` and `twinledger console backup|restore`: the coordinator's home in one
archive encrypted under a passphrase (federation/backup.py: scrypt + AES-256-GCM, SQLite's backup API for every
database in it, nothing written on a wrong passphrase or a changed byte, no home overwritten without --force).

The operator console keeps its settings (console.toml), database (console.db: role tokens, sessions, action log,
studies, runs) and Flower home in the coordinator's home, so both commands write the same archive: the
coordinator's settings, key, run reports and, when the console is set up there, the console's. `console backup`
also names an operator key kept outside the home (console.toml operator-key-file: not in the archive). The
SuperLink's state and TLS folders (`coordinator superlink --state-dir`, `--ca-dir`) are outside the home unless
put in it.
"""

from __future__ import annotations

from pathlib import Path

from coordinator.settings import CONFIG_NAME
from contracts.keystore import read_passphrase_file
from federation.backup import HomeKind, backup_home, backup_passphrase, restore_home

MAGIC = b"TWINLEDGER-COORDINATOR-BACKUP\n"
COORDINATOR_HOME = HomeKind(name="coordinator", magic=MAGIC, required=(CONFIG_NAME,))
CONSOLE_HOME = HomeKind(name="operator console", magic=MAGIC, required=(CONFIG_NAME,))  # console.toml is optional
COMMANDS = {COORDINATOR_HOME.name: "coordinator", CONSOLE_HOME.name: "console"}

PASSPHRASE_HELP = ("a file holding the archive's passphrase on its first line (default: "
                   "$TWINLEDGER_BACKUP_PASSPHRASE_FILE, else $TWINLEDGER_BACKUP_PASSPHRASE)")


def _outside_the_home(home: Path, kind: HomeKind) -> list[Path]:
    """Files the home's settings name that the archive does not hold (kept outside the home)."""
    if kind is not CONSOLE_HOME:
        return []
    from coordinator.console.settings import ConsoleSettings

    key = ConsoleSettings.load(home).operator_key
    return [] if key.resolve().is_relative_to(home.resolve()) else [key]


def _passphrase(args) -> str:
    given = Path(args.passphrase_file) if args.passphrase_file else None
    return backup_passphrase(given, read_file=read_passphrase_file)


def _backup(args, kind: HomeKind) -> int:
    home = Path(args.home)
    passphrase = _passphrase(args)
    out = backup_home(home, Path(args.out), kind=kind, passphrase=passphrase)
    print(f"{kind.name} home {home.resolve()} backed up to {out} (encrypted; keep the passphrase apart from it)")
    for path in _outside_the_home(home, kind):
        print(f"not in the archive, outside the home: {path} (back it up separately)")
    return 0


def _restore(args, kind: HomeKind) -> int:
    passphrase = _passphrase(args)
    kept = restore_home(Path(args.archive), Path(args.home), kind=kind, passphrase=passphrase, force=args.force)
    print(f"{kind.name} home {Path(args.home).resolve()} restored from {args.archive}"
          + (f"; the home it replaced is kept at {kept}" if kept else ""))
    return 0


def add_backup_commands(actions, kind: HomeKind, *, home_help: str) -> None:
    """`backup --home H --out FILE` and `restore --home H ARCHIVE` in a command group (`actions`)."""
    command = COMMANDS[kind.name]
    backup = actions.add_parser("backup", help=f"write the {kind.name}'s home (databases, keys, settings, run "
                                "reports) to an archive encrypted with a passphrase")
    backup.add_argument("--home", required=True, help=home_help)
    backup.add_argument("--out", required=True, help="the archive to write (never overwritten)")
    backup.add_argument("--passphrase-file", help=PASSPHRASE_HELP)
    backup.set_defaults(func=lambda args: _backup(args, kind))
    restore = actions.add_parser("restore", help=f"restore a home from an archive of 'twinledger {command} backup' "
                                 "(stop the SuperLink, runs and operator console first)")
    restore.add_argument("--home", required=True, help=home_help + " (empty or missing, unless --force)")
    restore.add_argument("--passphrase-file", help=PASSPHRASE_HELP)
    restore.add_argument("--force", action="store_true",
                         help="replace a home that is not empty (it is kept as <home>.before-restore-<time>)")
    restore.add_argument("archive", help="the backup archive")
    restore.set_defaults(func=lambda args: _restore(args, kind))
