"""The warm SuperNode launcher (node/supernode.py), one of the overhead cuts of `twinledger bench overhead`."""

import time
from pathlib import Path

import pytest

from deploy import processes
from node import supernode


def test_idle_poll_is_shortened_only_in_flowers_main_loop(monkeypatch):
    from flwr.supernode import start_client_internal as loop

    monkeypatch.setattr(loop, "time", time)
    assert supernode._shorten_idle_poll(0.01)
    started = time.perf_counter()
    loop.time.sleep(3)
    assert time.perf_counter() - started < 1.0
    assert loop.time.monotonic is time.monotonic
    assert time.sleep is not loop.time.sleep  # the time module itself is untouched


@pytest.mark.parametrize("warm", [True, False])
def test_supernode_command(warm):
    command = processes.supernode_command(warm=warm)
    if warm:
        assert command[-1] == "from node.supernode import main; main()"
    else:
        assert command[0].endswith("flower-supernode")


def test_launcher_sets_the_isolation_itself():
    with pytest.raises(SystemExit):
        supernode.main(["--insecure", "--isolation", "subprocess"])


def test_launcher_refuses_tls_options_for_its_local_runtime_api():
    with pytest.raises(SystemExit):
        supernode.main(["--root-certificates", "ca.pem", "--ssl-certfile", "x.pem"])


def test_the_app_gate_knows_the_installed_app_and_the_approved_digest_hook_defaults_to_it():
    from node import app_gate

    app_dir = supernode.default_app_dir()
    assert app_dir == processes.FLOWER_APP_DIR  # the packaged Flower app, found without importing the coordinator
    digest = app_gate.installed_app_digest(app_dir)
    assert supernode.approved_app_digest(object(), installed_digest=digest) == digest
    assert supernode.INSTALLED_APP == "node.client_app:app"


def test_security_options_trust_the_ca_and_sign_with_the_node_key(tmp_path):
    options = supernode.security_options(tmp_path / "home", root_certificates=tmp_path / "ca.pem", warm=True,
                                         installed_app_dir=tmp_path / "app")
    assert options[options.index("--root-certificates") + 1] == str(tmp_path / "ca.pem")
    key = tmp_path / "home" / "keys" / "supernode_auth"
    assert options[options.index("--auth-supernode-private-key") + 1] == str(key) and key.stat().st_mode & 0o077 == 0
    secret = Path(options[options.index("--superexec-auth-secret-file") + 1])
    assert secret.stat().st_mode & 0o077 == 0 and len(secret.read_bytes()) == 64
    assert options[options.index("--installed-app-dir") + 1] == str(tmp_path / "app")
    without_app = supernode.security_options(tmp_path / "home", root_certificates=tmp_path / "ca.pem", warm=True)
    assert without_app[:4] == options[:4] and "--installed-app-dir" not in without_app  # the same key, kept
    stock = supernode.security_options(tmp_path / "home", root_certificates=tmp_path / "ca.pem", warm=False)
    assert "--superexec-auth-secret-file" not in stock  # Flower's own executor runs subprocess isolation: no secret
