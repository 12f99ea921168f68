"""Faults of issue 15 in a node's database: a truncated node.db gave a raw DatabaseError; a read-only or full disk
was found only after records were decrypted. Now each is refused with protocol.STORE_UNAVAILABLE and the
database's path, and the write-ahead intent (written before anything is decrypted) is where a disk that takes no
writes is found: nothing is decrypted. The disks are real: a tmpfs remounted read-only, and one filled up."""

from __future__ import annotations

import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from flwr.app import MessageType

from federation import protocol
from federation.ids import StudyId
from federation.protocol import RoundConfig
from node import client_app
from node.consent_gate import ConsentGate
from node.service import HospitalNode
from tests.node.hospital import hospital  # noqa: F401 - the fixture
from tests.node.test_client_app import context, offline_home, round_message, superlink_identity  # noqa: F401

pytestmark = pytest.mark.timeout(120)


def test_a_truncated_node_database_is_refused_with_a_code_naming_the_file(offline_home):
    database = offline_home.home / "node.db"
    database.write_bytes(database.read_bytes()[:100])  # the header, then nothing: a crash mid-copy
    config = RoundConfig(study_id=StudyId.new(), round=1, block=1)
    reply = client_app.app(message=round_message(MessageType.TRAIN, config), context=context(offline_home.home))
    assert reply.has_error() and reply.error.code == protocol.STORE_UNAVAILABLE
    assert str(database) in reply.error.reason and "restore it from a backup" in reply.error.reason
    assert "Traceback" not in reply.error.reason


@contextmanager
def _small_disk(where: Path, *, size_kb: int):
    """A tmpfs of `size_kb` at `where` (root only: this machine's CI runs as root; elsewhere the test skips)."""
    where.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small disk needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _node_on(hospital, database: Path, monkeypatch) -> list:  # noqa: F811
    """The hospital's node with its database at `database`; returns the list of records decrypted (empty)."""
    settings = hospital.settings.model_copy(update={"database_url": f"sqlite:///{database}"})
    monkeypatch.setattr(client_app, "open_node", lambda ctx: HospitalNode(settings, ledger=hospital.chain.hospital))
    opened = []
    real = ConsentGate.open_records
    monkeypatch.setattr(ConsentGate, "open_records", lambda self, *a, **k: opened.append(1) or real(self, *a, **k))
    return opened


def _refused_before_decrypting(hospital, opened) -> None:  # noqa: F811
    reply = client_app.app(message=round_message(MessageType.TRAIN, hospital.config(1)),
                           context=context(hospital.settings.home))
    assert reply.has_error() and reply.error.code == protocol.STORE_UNAVAILABLE, reply.error.reason
    assert "nothing was decrypted" in reply.error.reason and "node.db" in reply.error.reason
    assert opened == []


@pytest.mark.slow
def test_a_read_only_disk_is_refused_before_any_record_is_decrypted(hospital, monkeypatch, tmp_path):  # noqa: F811
    with _small_disk(tmp_path / "disk", size_kb=4096) as disk:
        shutil.copy(hospital.settings.home / "node.db", disk / "node.db")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        _refused_before_decrypting(hospital, _node_on(hospital, disk / "node.db", monkeypatch))


@pytest.mark.slow
def test_a_full_disk_is_refused_before_any_record_is_decrypted(hospital, monkeypatch, tmp_path):  # noqa: F811
    with _small_disk(tmp_path / "disk", size_kb=4096) as disk:
        shutil.copy(hospital.settings.home / "node.db", disk / "node.db")
        with open(disk / "filler", "wb", buffering=0) as filler:  # the rest of the disk
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError:  # ENOSPC: the disk is full
                pass
        _refused_before_decrypting(hospital, _node_on(hospital, disk / "node.db", monkeypatch))


def test_a_deleted_hospital_key_is_reported_as_such_not_as_chain_unavailable(chain, tmp_path):
    from node import admin

    chain.deployment.save(tmp_path / "deployment.json")
    settings = admin.init_node(tmp_path / "node", hospital="cleveland", rpc_url="http://127.0.0.1:9",
                               deployment_file=tmp_path / "deployment.json")
    settings.hospital_key_file.unlink()
    config = RoundConfig(study_id=StudyId.new(), round=1, block=1)
    reply = client_app.app(message=round_message(MessageType.TRAIN, config), context=context(settings.home))
    assert reply.has_error() and reply.error.code == protocol.HOSPITAL_KEY_MISSING
    assert str(settings.hospital_key_file) in reply.error.reason and "restore it" in reply.error.reason
