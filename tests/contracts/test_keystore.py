"""Encrypted keystores for the chain keys: standard Ethereum keystore JSON through eth-account, the passphrase
from a file or the environment, bad files and wrong passphrases answered with a clear KeystoreError.

Most tests use a cheap key derivation (`CHEAP`): the standard scrypt takes seconds per key on these cores.
"""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from contracts.keystore import (
    KeystoreError, encrypt_key_file, is_keystore, load_key_file, passphrase_env_names, passphrase_for,
    read_keystore, write_keystore,
)

CHEAP = {"kdf": "pbkdf2", "iterations": 1000}
KEY = "0x" + "4c" * 32


def test_a_keystore_round_trips_the_key_and_never_holds_it_in_plaintext(tmp_path):
    path = tmp_path / "keys" / "hospital.key"
    assert write_keystore(path, "correct horse", KEY, **CHEAP) == KEY
    text = path.read_text()
    assert KEY[2:] not in text.lower()
    document = json.loads(text)
    assert document["version"] == 3 and document["address"].lower() == Account.from_key(KEY).address[2:].lower()
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_keystore(path, "correct horse") == KEY


def test_a_new_key_is_random_and_readable_back(tmp_path):
    first = write_keystore(tmp_path / "a.key", "pw", **CHEAP)
    second = write_keystore(tmp_path / "b.key", "pw", **CHEAP)
    assert first != second and len(first) == 66
    assert read_keystore(tmp_path / "a.key", "pw") == first


def test_the_default_derivation_is_the_standard_scrypt(tmp_path):
    write_keystore(tmp_path / "k.key", "pw", KEY)
    params = json.loads((tmp_path / "k.key").read_text())["crypto"]
    assert params["kdf"] == "scrypt" and params["kdfparams"]["n"] == 2 ** 18


def test_a_wrong_passphrase_says_so(tmp_path):
    write_keystore(tmp_path / "k.key", "right", KEY, **CHEAP)
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        read_keystore(tmp_path / "k.key", "wrong")


def test_an_empty_passphrase_is_refused(tmp_path):
    with pytest.raises(KeystoreError, match="non-empty passphrase"):
        write_keystore(tmp_path / "k.key", "", KEY, **CHEAP)
    assert not (tmp_path / "k.key").exists()


def test_an_existing_key_file_is_never_overwritten(tmp_path):
    write_keystore(tmp_path / "k.key", "pw", KEY, **CHEAP)
    before = (tmp_path / "k.key").read_text()
    with pytest.raises(KeystoreError, match="never overwritten"):
        write_keystore(tmp_path / "k.key", "pw", **CHEAP)
    assert (tmp_path / "k.key").read_text() == before


def test_the_passphrase_comes_from_the_roles_file_first_then_its_variable_then_the_shared_ones(tmp_path):
    own_file = tmp_path / "hospital.pass"
    own_file.write_text("from-file\n")
    shared_file = tmp_path / "shared.pass"
    shared_file.write_text("shared-file\r\n")
    env = {"TWINLEDGER_HOSPITAL_KEY_PASSPHRASE_FILE": str(own_file), "TWINLEDGER_HOSPITAL_KEY_PASSPHRASE": "var",
           "TWINLEDGER_KEY_PASSPHRASE_FILE": str(shared_file), "TWINLEDGER_KEY_PASSPHRASE": "shared"}
    assert passphrase_for("hospital", env) == "from-file"
    del env["TWINLEDGER_HOSPITAL_KEY_PASSPHRASE_FILE"]
    assert passphrase_for("hospital", env) == "var"
    assert passphrase_for("coordinator", env) == "shared-file"
    del env["TWINLEDGER_KEY_PASSPHRASE_FILE"]
    assert passphrase_for("operator", env) == "shared"
    assert passphrase_for("operator", {}) is None


def test_a_missing_or_empty_passphrase_file_is_a_clear_error(tmp_path):
    with pytest.raises(KeystoreError, match="no passphrase file"):
        passphrase_for("operator", {"TWINLEDGER_OPERATOR_KEY_PASSPHRASE_FILE": str(tmp_path / "absent")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(KeystoreError, match="is empty"):
        passphrase_for("operator", {"TWINLEDGER_OPERATOR_KEY_PASSPHRASE_FILE": str(tmp_path / "empty")})


def test_an_unknown_role_is_refused():
    with pytest.raises(KeystoreError, match="unknown key role"):
        passphrase_env_names("auditor")


def test_load_key_file_reads_a_keystore_with_the_environments_passphrase_and_a_legacy_hex_file_as_before(tmp_path):
    write_keystore(tmp_path / "coordinator.key", "s3cret", KEY, **CHEAP)
    env = {"TWINLEDGER_COORDINATOR_KEY_PASSPHRASE": "s3cret"}
    assert load_key_file(tmp_path / "coordinator.key", role="coordinator", environ=env) == KEY
    (tmp_path / "legacy.key").write_text(KEY + "\n")
    assert load_key_file(tmp_path / "legacy.key", role="hospital", environ={}) == KEY
    assert not is_keystore(tmp_path / "legacy.key") and is_keystore(tmp_path / "coordinator.key")


def test_a_keystore_without_a_passphrase_names_the_variables_to_set(tmp_path):
    write_keystore(tmp_path / "hospital.key", "pw", KEY, **CHEAP)
    with pytest.raises(KeystoreError, match="TWINLEDGER_HOSPITAL_KEY_PASSPHRASE_FILE"):
        load_key_file(tmp_path / "hospital.key", role="hospital", environ={})


def test_a_legacy_key_file_is_encrypted_in_place_keeping_its_account(tmp_path):
    path = tmp_path / "operator.key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    assert encrypt_key_file(path, "pw", **CHEAP) == Account.from_key(KEY).address
    assert is_keystore(path) and path.stat().st_mode & 0o777 == 0o600
    assert read_keystore(path, "pw") == KEY
    assert [p.name for p in tmp_path.iterdir()] == ["operator.key"]
    with pytest.raises(KeystoreError, match="already a keystore"):
        encrypt_key_file(path, "pw", **CHEAP)


def test_encrypting_a_file_that_holds_no_key_changes_nothing(tmp_path):
    path = tmp_path / "operator.key"
    path.write_text("not a key\n")
    with pytest.raises(KeystoreError, match="does not hold a hex private key"):
        encrypt_key_file(path, "pw", **CHEAP)
    assert path.read_text() == "not a key\n"


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    ('{"version": 3}', "not a version 3"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ('{"version": 3, "crypto": {"kdf": "scrypt", "kdfparams": {"n": 1073741824, "r": 8, "p": 1, "dklen": 32}}}',
     "out of bounds"),
    ('{"version": 3, "crypto": {"kdf": "pbkdf2", "kdfparams": {"c": 1000000000, "dklen": 32}}}', "out of bounds"),
    ('{"version": 3, "crypto": {"kdf": "argon2", "kdfparams": {}}}', "unsupported key derivation"),
    ('{"version": 3, "crypto": {"kdf": "scrypt", "kdfparams": {"n": "many"}}}', "malformed kdfparams"),
    ('{"version": 3, "crypto": {"kdf": "pbkdf2", "kdfparams": {"c": 10, "dklen": 32, "salt": "00",'
     ' "prf": "hmac-sha256"}}}', "not a readable keystore"),
])
def test_a_malformed_or_hostile_keystore_is_refused_with_a_clear_error(tmp_path, content, message):
    path = tmp_path / "k.key"
    path.write_text(content)
    with pytest.raises(KeystoreError, match=message):
        read_keystore(path, "pw")


def test_a_missing_or_oversized_key_file_is_a_clear_error(tmp_path):
    with pytest.raises(KeystoreError, match="no key file"):
        read_keystore(tmp_path / "absent.key", "pw")
    (tmp_path / "big.key").write_text("{" + " " * 70_000 + "}")
    with pytest.raises(KeystoreError, match="too large"):
        load_key_file(tmp_path / "big.key", role="operator", passphrase="pw")


# ---- what the ledger client reads: load_key (issue 14 item 5) ----


def test_load_key_decrypts_a_keystore_with_its_roles_passphrase(tmp_path, monkeypatch):
    from contracts import ledger as lg

    write_keystore(tmp_path / "operator.key", "s3cret", KEY, **CHEAP)
    monkeypatch.setenv("TWINLEDGER_OPERATOR_KEY_PASSPHRASE", "s3cret")
    assert lg.load_key(tmp_path / "operator.key", role="operator") == KEY
    monkeypatch.delenv("TWINLEDGER_OPERATOR_KEY_PASSPHRASE")
    passphrase = tmp_path / "pass"
    passphrase.write_text("s3cret\n")
    monkeypatch.setenv("TWINLEDGER_KEY_PASSPHRASE_FILE", str(passphrase))  # the shared file, for a reader of any role
    (tmp_path / "any.key").write_text((tmp_path / "operator.key").read_text())
    assert lg.load_key(tmp_path / "any.key") == KEY


def test_load_key_takes_the_role_from_the_files_conventional_name(tmp_path, monkeypatch):
    """The node and the coordinator read hospital.key and coordinator.key without naming a role."""
    from contracts import ledger as lg

    write_keystore(tmp_path / "hospital.key", "h", KEY, **CHEAP)
    monkeypatch.setenv("TWINLEDGER_HOSPITAL_KEY_PASSPHRASE", "h")
    assert lg.load_key(tmp_path / "hospital.key") == KEY


def test_load_key_with_a_wrong_passphrase_is_a_ledger_error_that_says_so(tmp_path, monkeypatch):
    from contracts import ledger as lg

    write_keystore(tmp_path / "hospital.key", "right", KEY, **CHEAP)
    monkeypatch.setenv("TWINLEDGER_HOSPITAL_KEY_PASSPHRASE", "wrong")
    with pytest.raises(lg.LedgerError, match="wrong passphrase for the keystore"):
        lg.load_key(tmp_path / "hospital.key", role="hospital")
    monkeypatch.delenv("TWINLEDGER_HOSPITAL_KEY_PASSPHRASE")
    with pytest.raises(lg.LedgerError, match="TWINLEDGER_HOSPITAL_KEY_PASSPHRASE_FILE"):
        lg.load_key(tmp_path / "hospital.key", role="hospital")


def test_a_plaintext_key_file_is_still_read_but_warned_about_once(tmp_path, caplog):
    from contracts import ledger as lg

    (tmp_path / "legacy.key").write_text(KEY + "\n")
    with caplog.at_level("WARNING", logger="contracts.ledger.keys"):
        assert lg.load_key(tmp_path / "legacy.key") == KEY
        assert lg.load_key(tmp_path / "legacy.key") == KEY
    warnings = [r.getMessage() for r in caplog.records if "plaintext" in r.getMessage()]
    assert len(warnings) == 1 and "twinledger chain encrypt-key" in warnings[0]


def test_a_wrong_passphrase_on_the_command_line_is_one_line_and_no_traceback(tmp_path, monkeypatch, capsys):
    """Refused before the chain is even reached: nothing is deployed with a key nobody could read."""
    from deploy.cli import main

    write_keystore(tmp_path / "operator.key", "right", KEY, **CHEAP)
    monkeypatch.setenv("TWINLEDGER_OPERATOR_KEY_PASSPHRASE", "wrong")
    status = main(["chain", "deploy", "--operator-key", str(tmp_path / "operator.key"),
                   "--rpc-url", "http://127.0.0.1:9", "--out", str(tmp_path / "deployment.json")])
    err = capsys.readouterr().err
    assert status == 2 and "wrong passphrase" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "deployment.json").exists()


def test_encrypt_key_turns_a_plaintext_file_into_a_keystore_of_the_same_account(tmp_path, monkeypatch, capsys):
    import functools

    from contracts import keystore
    from contracts import ledger as lg
    from deploy.cli import main

    monkeypatch.setattr(keystore, "encrypt_key_file", functools.partial(keystore.encrypt_key_file, **CHEAP))

    (tmp_path / "coordinator.key").write_text(KEY + "\n")
    assert main(["chain", "encrypt-key", str(tmp_path / "coordinator.key"), "--role", "coordinator"]) == 2
    assert "TWINLEDGER_COORDINATOR_KEY_PASSPHRASE_FILE" in capsys.readouterr().err  # no passphrase: nothing done
    assert not is_keystore(tmp_path / "coordinator.key")
    passphrase = tmp_path / "pass"
    passphrase.write_text("s3cret\n")
    monkeypatch.setenv("TWINLEDGER_COORDINATOR_KEY_PASSPHRASE_FILE", str(passphrase))
    assert main(["chain", "encrypt-key", str(tmp_path / "coordinator.key"), "--role", "coordinator"]) == 0
    assert Account.from_key(KEY).address in capsys.readouterr().out
    assert is_keystore(tmp_path / "coordinator.key") and KEY[2:] not in (tmp_path / "coordinator.key").read_text()
    assert lg.load_key(tmp_path / "coordinator.key", role="coordinator") == KEY
