"""`twinledger node backup` / `restore` (node/backup.py): the home comes back whole under the right passphrase; a
wrong passphrase, a tampered archive or a non-empty home writes nothing."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from node import admin
from node.backup import BackupError, backup_home, backup_passphrase, restore_home
from node.settings import NodeSettings
from node.store import RoundRefusal, Store

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def home(tmp_path):
    settings = admin.init_node(tmp_path / "node", hospital="h1", rpc_url="http://unused.invalid", deployment_file=None)
    Store(settings.resolved_database_url).record_refusal(
        RoundRefusal(study_id="0xab", round=1, phase="train", code=4001, reason="before the backup"))
    return settings


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name != "node.db"}


def test_a_backup_restores_the_whole_home_into_a_new_one(home, tmp_path):
    archive = backup_home(home, tmp_path / "node.backup", passphrase=PASSPHRASE)
    assert archive.stat().st_mode & 0o777 == 0o600
    assert b"hospital" not in archive.read_bytes()  # node.toml, keys, database: all encrypted

    restored = tmp_path / "restored"
    assert restore_home(archive, restored, passphrase=PASSPHRASE) is None

    assert _files(restored) == _files(home.home)
    assert (restored / "keys" / "hospital.key").stat().st_mode & 0o777 == 0o600
    settings = NodeSettings.load(restored)
    (refusal,) = Store(settings.resolved_database_url).refusals("0xab")
    assert refusal.reason == "before the backup"
    volume = tmp_path / "volume"  # an empty home that exists already (a fresh volume): filled in place
    volume.mkdir()
    assert restore_home(archive, volume, passphrase=PASSPHRASE) is None
    assert _files(volume) == _files(home.home) and sorted(p.name for p in tmp_path.iterdir()
                                                           if "before-restore" in p.name) == []


def test_the_database_is_copied_consistently_while_it_is_written(home, tmp_path):
    store = Store(home.resolved_database_url)
    stop = threading.Event()

    def write():
        n = 2
        while not stop.is_set():
            store.record_refusal(RoundRefusal(study_id="0xab", round=n, phase="train", code=4001, reason="busy"))
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        archive = backup_home(home, tmp_path / "busy.backup", passphrase=PASSPHRASE)
    finally:
        stop.set()
        writer.join()
    restore_home(archive, tmp_path / "restored", passphrase=PASSPHRASE)
    with sqlite3.connect(tmp_path / "restored" / "node.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM roundrefusal").fetchone()[0] >= 1


def test_a_wrong_passphrase_or_a_tampered_archive_restores_nothing(home, tmp_path):
    archive = backup_home(home, tmp_path / "node.backup", passphrase=PASSPHRASE)
    target = tmp_path / "restored"
    with pytest.raises(BackupError, match="wrong passphrase, or the archive was altered"):
        restore_home(archive, target, passphrase="guess")
    data = bytearray(archive.read_bytes())
    data[-40] ^= 1
    tampered = tmp_path / "tampered.backup"
    tampered.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="wrong passphrase, or the archive was altered"):
        restore_home(tampered, target, passphrase=PASSPHRASE)
    header_changed = tmp_path / "header.backup"
    header_changed.write_bytes(archive.read_bytes().replace(b'"n": 32768', b'"n": 16384'))
    with pytest.raises(BackupError, match="wrong passphrase, or the archive was altered"):
        restore_home(header_changed, target, passphrase=PASSPHRASE)
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_header_nested_too_deep_is_a_malformed_backup_not_a_recursion_error(tmp_path):
    from node.backup import MAGIC

    nested = b"[" * 4000 + b"]" * 96  # within the header's size limit, deeper than Python's recursion limit
    archive = tmp_path / "deep.backup"
    archive.write_bytes(MAGIC + len(nested).to_bytes(4, "big") + nested)
    with pytest.raises(BackupError, match="malformed header"):
        restore_home(archive, tmp_path / "target", passphrase=PASSPHRASE)
    assert not (tmp_path / "target").exists()


def test_a_non_empty_home_is_replaced_only_with_force_and_kept_beside_it(home, tmp_path):
    archive = backup_home(home, tmp_path / "node.backup", passphrase=PASSPHRASE)
    (home.home / "newer.txt").write_text("written after the backup")
    with pytest.raises(BackupError, match="not empty"):
        restore_home(archive, home.home, passphrase=PASSPHRASE)
    assert (home.home / "newer.txt").exists()

    kept = restore_home(archive, home.home, passphrase=PASSPHRASE, force=True)

    assert not (home.home / "newer.txt").exists() and (kept / "newer.txt").read_text() == "written after the backup"
    assert (home.home / "node.toml").exists()


def test_a_backup_never_overwrites_a_file_and_needs_a_passphrase_from_a_file_or_the_environment(home, tmp_path):
    existing = tmp_path / "existing.backup"
    existing.write_text("keep me")
    with pytest.raises(BackupError, match="never overwrites"):
        backup_home(home, existing, passphrase=PASSPHRASE)
    assert existing.read_text() == "keep me"
    with pytest.raises(BackupError, match="TWINLEDGER_BACKUP_PASSPHRASE_FILE"):
        backup_passphrase(None, environ={})
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    assert backup_passphrase(None, environ={"TWINLEDGER_BACKUP_PASSPHRASE_FILE": str(secret)}) == PASSPHRASE
    assert backup_passphrase(secret, environ={"TWINLEDGER_BACKUP_PASSPHRASE": "other"}) == PASSPHRASE


def test_the_backup_and_restore_commands(home, tmp_path, monkeypatch, capsys):
    from deploy import cli

    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE)
    out = tmp_path / "cli.backup"
    assert cli.main(["node", "backup", "--home", str(home.home), "--out", str(out),
                     "--passphrase-file", str(secret)]) == 0
    monkeypatch.setenv("TWINLEDGER_BACKUP_PASSPHRASE", "wrong")
    assert cli.main(["node", "restore", "--home", str(tmp_path / "r"), str(out)]) == 2
    assert "wrong passphrase" in capsys.readouterr().err and not (tmp_path / "r").exists()
    monkeypatch.setenv("TWINLEDGER_BACKUP_PASSPHRASE", PASSPHRASE)
    assert cli.main(["node", "restore", "--home", str(tmp_path / "r"), str(out)]) == 0
    assert (tmp_path / "r" / "node.toml").exists()
