"""The commands that create a party's chain key (`node init`, `coordinator init`, `chain deploy`) write the
standard Ethereum keystore, under the passphrase from a file or the environment that `load_key` reads; without
one they refuse and write nothing, and `--plaintext-key` is the development escape hatch."""

from __future__ import annotations

import functools
import json

import pytest
from eth_account import Account

from contracts import keystore
from contracts import ledger as lg
from deploy.cli import main

CHEAP = {"kdf": "pbkdf2", "iterations": 2}  # the tests' cost; the commands use eth-account's standard scrypt


@pytest.fixture(autouse=True)
def cheap_keystores(monkeypatch):
    monkeypatch.setattr(keystore, "write_keystore", functools.partial(keystore.write_keystore, **CHEAP))
    for name in ("HOSPITAL", "COORDINATOR", "OPERATOR"):
        for suffix in ("_KEY_PASSPHRASE", "_KEY_PASSPHRASE_FILE"):
            monkeypatch.delenv(f"TWINLEDGER_{name}{suffix}", raising=False)
    monkeypatch.delenv("TWINLEDGER_KEY_PASSPHRASE", raising=False)
    monkeypatch.delenv("TWINLEDGER_KEY_PASSPHRASE_FILE", raising=False)


def _is_keystore_of(path, passphrase, role) -> str:
    document = json.loads(path.read_text())
    assert document["version"] == 3 and path.stat().st_mode & 0o777 == 0o600
    key = lg.load_key(path, role=role)
    assert keystore.read_keystore(path, passphrase) == key
    return Account.from_key(key).address


def test_node_init_writes_the_hospital_key_as_a_keystore(tmp_path, monkeypatch, capsys):
    secret = tmp_path / "passphrase"
    secret.write_text("hospital passphrase\n")
    monkeypatch.setenv("TWINLEDGER_HOSPITAL_KEY_PASSPHRASE_FILE", str(secret))
    home = tmp_path / "node"
    assert main(["node", "init", "--home", str(home), "--hospital", "h1"]) == 0
    address = _is_keystore_of(home / "keys" / "hospital.key", "hospital passphrase", "hospital")
    assert address in capsys.readouterr().out


def test_coordinator_init_writes_its_key_as_a_keystore(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWINLEDGER_KEY_PASSPHRASE", "shared passphrase")
    home = tmp_path / "coordinator"
    assert main(["coordinator", "init", "--home", str(home), "--rpc-url", "http://127.0.0.1:9",
                 "--deployment-file", str(tmp_path / "deployment.json")]) == 0
    address = _is_keystore_of(home / "keys" / "coordinator.key", "shared passphrase", "coordinator")
    assert address in capsys.readouterr().out


def test_chain_deploy_writes_a_new_operator_key_as_a_keystore(tmp_path, monkeypatch):
    monkeypatch.setenv("TWINLEDGER_OPERATOR_KEY_PASSPHRASE", "operator passphrase")
    key = tmp_path / "operator.key"
    # No chain answers here: the key is made (and read back) before the chain is reached.
    assert main(["chain", "deploy", "--operator-key", str(key), "--rpc-url", "http://127.0.0.1:9",
                 "--out", str(tmp_path / "deployment.json")]) == 2
    _is_keystore_of(key, "operator passphrase", "operator")


@pytest.mark.parametrize("argv, written", [
    (["node", "init", "--home", "{tmp}/node", "--hospital", "h1"], "node"),
    (["coordinator", "init", "--home", "{tmp}/coordinator", "--deployment-file", "{tmp}/d.json"], "coordinator"),
    (["chain", "deploy", "--operator-key", "{tmp}/operator.key", "--rpc-url", "http://127.0.0.1:9"], "operator.key"),
], ids=["node", "coordinator", "chain"])
def test_without_a_passphrase_nothing_is_written_unless_plaintext_is_asked_for(argv, written, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "_KEY_PASSPHRASE_FILE" in err and "--plaintext-key" in err and "Traceback" not in err
    assert not (tmp_path / written).exists()
    main([*argv, "--plaintext-key"])
    key_file = next(p for p in tmp_path.rglob("*.key") if p.name != "data.key")
    assert key_file.read_text().startswith("0x")  # the legacy hex file, warned about by load_key
