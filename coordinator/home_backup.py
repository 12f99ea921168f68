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
from federation.backup import HomeKind, add_archive_commands, backup_home, backup_passphrase, restore_home

MAGIC = b"TWINLEDGER-COORDINATOR-BACKUP\n"
COORDINATOR_HOME = HomeKind(name="coordinator", magic=MAGIC, required=(CONFIG_NAME,))
CONSOLE_HOME = HomeKind(name="operator console", magic=MAGIC, required=(CONFIG_NAME,))  # console.toml is optional
COMMANDS = {COORDINATOR_HOME.name: "coordinator", CONSOLE_HOME.name: "console"}

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
    add_archive_commands(actions, command=COMMANDS[kind.name], home_help=home_help,
                         contents=f"{kind.name}'s home (databases, keys, settings, run reports)",
                         stop_first="the SuperLink, runs and operator console",
                         backup=lambda args: _backup(args, kind), restore=lambda args: _restore(args, kind))
