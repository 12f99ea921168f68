"""`twinledger coordinator backup|restore` and `twinledger console backup|restore` (coordinator/home_backup.py over
federation/backup.py): the coordinator's home, with the operator console's database in it, comes back whole; the
restored console database opens, migrates and still knows its tokens; a wrong passphrase, another component's
archive or a non-empty home writes nothing."""

from __future__ import annotations

import pytest
from sqlmodel import Session, create_engine

from coordinator.console.settings import ConsoleSettings
from coordinator.home_backup import COORDINATOR_HOME
from coordinator.settings import CoordinatorSettings
from deploy.cli import main
from federation.web import auth

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def home(tmp_path, capsys):
    """A coordinator home with its key, a run report and an operator console holding one token."""
    home = tmp_path / "coordinator"
    CoordinatorSettings(home=home, rpc_url="http://unused.invalid").save()
    (home / "keys").mkdir(mode=0o700)
    (home / "keys" / "coordinator.key").write_text("{}\n")
    (home / "keys" / "coordinator.key").chmod(0o600)
    (home / "runs" / "run-1").mkdir(parents=True)
    (home / "runs" / "run-1" / "report.json").write_text('{"status": "finished"}\n')
    assert main(["console", "token", "--home", str(home), "--name", "alice", "--role", "operator"]) == 0
    token = capsys.readouterr().out.split()[0]
    (tmp_path / "passphrase").write_text(PASSPHRASE + "\n")
    return home, token


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name != "console.db"}


def test_a_coordinator_backup_restores_a_home_whose_console_opens_migrates_and_knows_its_tokens(home, tmp_path,
                                                                                               capsys):
    home, token = home
    secret = str(tmp_path / "passphrase")
    archive = tmp_path / "coordinator.backup"
    assert main(["coordinator", "backup", "--home", str(home), "--out", str(archive),
                 "--passphrase-file", secret]) == 0
    assert archive.stat().st_mode & 0o777 == 0o600 and b"alice" not in archive.read_bytes()
    restored = tmp_path / "restored"
    assert main(["console", "restore", "--home", str(restored), "--passphrase-file", secret, str(archive)]) == 0
    assert "restored from" in capsys.readouterr().out

    assert _files(restored) == _files(home)
    assert (restored / "keys" / "coordinator.key").stat().st_mode & 0o777 == 0o600
    assert CoordinatorSettings.load(restored).key_file == (restored / "keys" / "coordinator.key").resolve()
    assert main(["console", "migrate", "--home", str(restored)]) == 0
    assert "console.db: current" in capsys.readouterr().out
    with Session(create_engine(ConsoleSettings.load(restored).database_url)) as db:
        assert auth.token_holder(db, token).name == "alice"


def test_the_console_backup_is_the_same_archive_and_names_an_operator_key_outside_the_home(home, tmp_path, capsys):
    home, _ = home
    outside = tmp_path / "elsewhere" / "operator.key"
    (home / "console.toml").write_text(f'operator-key-file = "{outside}"\n')
    archive = tmp_path / "console.backup"
    assert main(["console", "backup", "--home", str(home), "--out", str(archive),
                 "--passphrase-file", str(tmp_path / "passphrase")]) == 0
    assert f"not in the archive, outside the home: {outside}" in capsys.readouterr().out
    assert main(["coordinator", "restore", "--home", str(tmp_path / "restored"),
                 "--passphrase-file", str(tmp_path / "passphrase"), str(archive)]) == 0
    assert (tmp_path / "restored" / "console.toml").exists() and (tmp_path / "restored" / "console.db").exists()


def test_a_wrong_passphrase_a_node_archive_or_a_non_empty_home_restores_nothing(home, tmp_path, capsys):
    home, _ = home
    secret = str(tmp_path / "passphrase")
    archive = tmp_path / "coordinator.backup"
    assert main(["coordinator", "backup", "--home", str(home), "--out", str(archive), "--passphrase-file", secret]) == 0
    assert main(["coordinator", "backup", "--home", str(home), "--out", str(archive), "--passphrase-file", secret]) == 2
    assert "never overwrites" in capsys.readouterr().err
    wrong = tmp_path / "wrong"
    wrong.write_text("guess\n")
    target = tmp_path / "target"
    assert main(["coordinator", "restore", "--home", str(target), "--passphrase-file", str(wrong), str(archive)]) == 2
    assert capsys.readouterr().err.strip().endswith("wrong passphrase, or the archive was altered (nothing was restored)")
    node_home = tmp_path / "node"
    assert main(["node", "init", "--home", str(node_home), "--hospital", "h1", "--plaintext-key"]) == 0
    node_archive = tmp_path / "node.backup"
    assert main(["node", "backup", "--home", str(node_home), "--out", str(node_archive), "--passphrase-file", secret]) == 0
    capsys.readouterr()
    assert main(["coordinator", "restore", "--home", str(target), "--passphrase-file", secret, str(node_archive)]) == 2
    assert "is not a TwinLedger coordinator backup" in capsys.readouterr().err
    assert main(["coordinator", "backup", "--home", str(node_home), "--out", str(tmp_path / "x.backup"),
                 "--passphrase-file", secret]) == 2
    assert "is not a coordinator home: it holds no coordinator.toml" in capsys.readouterr().err
    assert main(["console", "restore", "--home", str(home), "--passphrase-file", secret, str(archive)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert not target.exists() and not (tmp_path / "x.backup").exists()


def test_a_file_removed_during_the_backup_is_left_out_and_an_unreadable_one_stops_it_in_one_line(home, tmp_path,
                                                                                                  monkeypatch):
    from federation import backup

    home, _ = home
    (home / "runs" / "run-1" / "gone.tmp").write_text("removed while the backup runs")
    (home / "runs" / "run-1" / "bad.bin").write_text("unreadable")
    real = backup.Path.read_bytes

    def read_bytes(path):
        if path.name == "gone.tmp":
            raise FileNotFoundError(path)
        if path.name == "bad.bin":
            raise OSError(5, "Input/output error")
        return real(path)

    monkeypatch.setattr(backup.Path, "read_bytes", read_bytes)
    with pytest.raises(backup.BackupError, match=r"cannot read .*bad.bin for the backup \(.*Input/output error\)"):
        backup.backup_home(home, tmp_path / "a.backup", kind=COORDINATOR_HOME, passphrase=PASSPHRASE)
    assert not (tmp_path / "a.backup").exists()
    (home / "runs" / "run-1" / "bad.bin").unlink()
    archive = backup.backup_home(home, tmp_path / "b.backup", kind=COORDINATOR_HOME, passphrase=PASSPHRASE)
    monkeypatch.undo()
    backup.restore_home(archive, tmp_path / "restored", kind=COORDINATOR_HOME, passphrase=PASSPHRASE)
    assert (tmp_path / "restored" / "runs" / "run-1" / "report.json").exists()
    assert not (tmp_path / "restored" / "runs" / "run-1" / "gone.tmp").exists()
