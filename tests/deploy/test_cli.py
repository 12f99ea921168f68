"""The `twinledger` command line: argument parsing, clear errors (exit status 2, no traceback), the
coordinator run's outcome, and `chain start` stopping anvil on SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account import Account

from coordinator import processes as coordinator_processes
from deploy import cli, processes

STUDY = "0x" + "ab" * 32


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _subcommands(parser: argparse.ArgumentParser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _subcommands(child, path + (name,))
            return
    yield path, parser


# ---- parsing ----

def test_help_lists_every_command_with_its_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    lines = [line.strip().partition("  ") for line in capsys.readouterr().out.split("commands:\n", 1)[1].splitlines()]
    listed = {command: text.strip() for command, _, text in lines}
    commands = ["twinledger " + " ".join(path) for path, _ in _subcommands(cli.build_parser())]
    assert len(commands) > 30
    for command in commands:
        line = next((name for name in listed if name == command or name.startswith(command + " ")), None)
        assert line is not None, command
        assert listed[line], f"{command} has no help"
    assert "twinledger chain fund ADDRESS" in listed and "twinledger node import FILE" in listed  # positionals shown


def test_every_option_has_help():
    for path, parser in _subcommands(cli.build_parser()):
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, (path, action.option_strings or action.dest)


def test_hosts_default_to_loopback():
    parser = cli.build_parser()
    assert parser.parse_args(["chain", "start"]).host == "127.0.0.1"
    assert parser.parse_args(["chain", "start", "--host", "0.0.0.0"]).host == "0.0.0.0"
    assert parser.parse_args(["coordinator", "superlink"]).host == "127.0.0.1"
    assert parser.parse_args(["coordinator", "superlink", "--host", "10.0.0.5"]).host == "10.0.0.5"


def test_rpc_url_defaults_from_the_environment(monkeypatch):
    monkeypatch.setenv("TWINLEDGER_RPC_URL", "http://127.0.0.1:18545")
    parser = cli.build_parser()
    for argv in (
        ["chain", "deploy"],
        ["chain", "fund", "0x" + "11" * 20],
        ["node", "init", "--home", "h", "--hospital", "x"],
        ["coordinator", "init", "--home", "h", "--deployment-file", "d.json"],
        ["study", "propose"],
        ["audit", "--study", STUDY, "u.json"],
    ):
        assert parser.parse_args(argv).rpc_url == "http://127.0.0.1:18545", argv
    monkeypatch.delenv("TWINLEDGER_RPC_URL")
    assert cli.build_parser().parse_args(["chain", "deploy"]).rpc_url == "http://127.0.0.1:8545"


def test_coordinator_run_leaves_defaults_to_the_configuration():
    args = cli.build_parser().parse_args(["coordinator", "run", "--home", "h", "--study", STUDY])
    assert args.min_nodes is None
    assert (args.local_epochs, args.learning_rate, args.batch_size, args.max_grad_norm) == (None, None, None, None)
    args = cli.build_parser().parse_args(
        ["coordinator", "run", "--home", "h", "--study", STUDY, "--min-nodes", "3", "--learning-rate", "0.5"]
    )
    assert (args.min_nodes, args.learning_rate) == (3, 0.5)


def test_chain_fund_parses_address_and_ether():
    args = cli.build_parser().parse_args(["chain", "fund", "0x" + "11" * 20, "--ether", "3"])
    assert (args.address, args.ether) == ("0x" + "11" * 20, 3)
    assert cli.build_parser().parse_args(["chain", "fund", "0x" + "11" * 20]).ether == 10


# ---- error paths: a clear message and exit status 2 ----

@pytest.fixture
def node_home(tmp_path, capsys):
    home = tmp_path / "node-home"
    assert cli.main(["node", "init", "--home", str(home), "--hospital", "cleveland",
                     "--rpc-url", "http://127.0.0.1:1", "--deployment-file", str(tmp_path / "deployment.json"),
                     "--plaintext-key"]) == 0
    out = capsys.readouterr().out
    assert "twinledger chain fund 0x" in out  # the account needs gas
    assert "ecdsa-sha2-nistp256 " in out  # the SuperNode's public key, for the operator to admit
    return home


def test_malformed_csv_is_refused_with_its_lines(node_home, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    good = "63,1,1,145,233,1,2,150,0,2.3,3,0,6,0"
    bad.write_text(f"{good}\n{good}\n63,1,1,145,233,1,2,150,0,2.3,3,0,6,7\n63,1\n")
    assert cli.main(["node", "import", "--home", str(node_home), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("twinledger: ")
    assert "nothing imported" in err
    assert "line 3: num = 7 is outside [0, 4]" in err
    assert "line 4" in err
    assert "Traceback" not in err


def test_missing_csv_file(node_home, tmp_path, capsys):
    assert cli.main(["node", "import", "--home", str(node_home), str(tmp_path / "absent.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_missing_node_home(tmp_path, capsys):
    for argv in (["node", "import", "--home", str(tmp_path / "nowhere"), "x.csv"],
                 ["node", "export-usage", "--home", str(tmp_path / "nowhere"), "--out", str(tmp_path / "u.json")],
                 ["node", "accept-study", "--home", str(tmp_path / "nowhere"), STUDY]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "no node configuration at" in err and "twinledger node init" in err, argv


@pytest.mark.parametrize("study", ["0x1234", "ab" * 31, "0x" + "ab" * 33, "0x" + "zz" * 32])
def test_study_id_of_the_wrong_length(node_home, tmp_path, capsys, study):
    for argv in (["node", "accept-study", "--home", str(node_home), study],
                 ["audit", "--rpc-url", "http://127.0.0.1:1", "--study", study, "u.json"],
                 ["coordinator", "run", "--home", str(tmp_path), "--study", study, "--min-nodes", "1"]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "a study id is 32 bytes" in err, argv


def test_fund_refuses_a_malformed_address(capsys):
    assert cli.main(["chain", "fund", "0x123", "--rpc-url", "http://127.0.0.1:1"]) == 2
    assert "not an account address" in capsys.readouterr().err


def test_coordinator_run_without_home_and_min_nodes(tmp_path, capsys):
    assert cli.main(["coordinator", "run", "--home", str(tmp_path / "nowhere"), "--study", STUDY]) == 2
    err = capsys.readouterr().err
    assert "no coordinator configuration" in err and "--min-nodes" in err


def test_coordinator_run_rejects_a_superlink_without_port(tmp_path, capsys):
    assert cli.main(["coordinator", "run", "--home", str(tmp_path), "--study", STUDY, "--min-nodes", "1",
                     "--superlink", "coordinator.example.org"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


# ---- coordinator run: run config, SuperLink address and the report's outcome (flwr run faked) ----

class _FakeRun:
    def __init__(self, calls, report: dict | None, runs_dir: Path, run_name: str):
        self.calls, self.report, self.runs_dir, self.run_name = calls, report, runs_dir, run_name

    def __call__(self, *, federation, run_config, flwr_home, log_path, **_):
        self.calls.append({"federation": federation, "run_config": run_config, "flwr_home": flwr_home})
        if self.report is not None:
            path = self.runs_dir / (self.run_name or "run-42") / "report.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.report))

        class _Process:
            returncode = 0

            @staticmethod
            def wait():
                return 0

            @staticmethod
            def poll():
                return 0

        return type("Service", (), {"process": _Process()})()


@pytest.fixture
def coordinator_home(tmp_path, capsys):
    home = tmp_path / "coordinator-home"
    assert cli.main(["coordinator", "init", "--home", str(home), "--rpc-url", "http://127.0.0.1:1",
                     "--deployment-file", str(tmp_path / "deployment.json"), "--min-nodes", "3", "--plaintext-key"]) == 0
    assert "twinledger chain fund 0x" in capsys.readouterr().out
    return home


def _run(monkeypatch, tmp_path, home, report, extra=(), run_name="run"):
    calls = []
    monkeypatch.setattr(coordinator_processes, "flwr_run", _FakeRun(calls, report, home / "runs", run_name))
    code = cli.main(["coordinator", "run", "--home", str(home), "--study", STUDY, "--superlink", "10.1.2.3:18000",
                     "--flwr-home", str(tmp_path / ".flwr"), "--log", str(tmp_path / "flwr-run.log"),
                     "--root-certificates", str(tmp_path / "ca.pem"), "--run-name", run_name, *extra])
    return code, calls


def test_coordinator_run_uses_the_configured_min_nodes_and_host(monkeypatch, tmp_path, coordinator_home, capsys):
    code, calls = _run(monkeypatch, tmp_path, coordinator_home, {"status": "finished", "rounds": [{"anchor_block": 7}]})
    assert code == 0
    config = calls[0]["run_config"]
    assert config["min-nodes"] == 3  # from coordinator.toml
    assert config["study-id"] == STUDY and config["coordinator-home"] == str(coordinator_home.resolve())
    assert not {"local-epochs", "learning-rate", "batch-size", "max-grad-norm"} & set(config)
    connection = (tmp_path / ".flwr" / "config.toml").read_text()
    assert 'address = "10.1.2.3:18000"' in connection
    assert f'root-certificates = "{tmp_path / "ca.pem"}"' in connection and "insecure" not in connection
    out = capsys.readouterr().out
    assert "1 round(s), 1 anchored" in out
    assert f"Report: {coordinator_home.resolve() / 'runs' / 'run' / 'report.json'}" in out


def test_coordinator_run_passes_training_options_when_given(monkeypatch, tmp_path, coordinator_home):
    code, calls = _run(monkeypatch, tmp_path, coordinator_home, {"status": "finished", "rounds": []},
                       extra=["--min-nodes", "2", "--local-epochs", "1", "--learning-rate", "0.5", "--batch-size", "16",
                              "--max-grad-norm", "2.0"])
    assert code == 0
    config = calls[0]["run_config"]
    assert (config["min-nodes"], config["local-epochs"], config["learning-rate"], config["batch-size"],
            config["max-grad-norm"]) == (2, 1, 0.5, 16, 2.0)


def test_coordinator_run_fails_when_the_report_is_not_finished(monkeypatch, tmp_path, coordinator_home, capsys):
    report = {"status": "failed", "message": "only 1 node(s) connected after 120 s; 3 needed", "rounds": []}
    code, _ = _run(monkeypatch, tmp_path, coordinator_home, report)
    assert code == 1
    captured = capsys.readouterr()
    assert "the run is failed: only 1 node(s) connected after 120 s; 3 needed" in captured.err
    assert "Report: " in captured.out


def test_coordinator_run_fails_when_no_report_was_written(monkeypatch, tmp_path, coordinator_home, capsys):
    code, _ = _run(monkeypatch, tmp_path, coordinator_home, None)
    assert code == 1
    assert "the run wrote no report" in capsys.readouterr().err


def test_coordinator_run_finds_the_report_of_an_unnamed_run(monkeypatch, tmp_path, coordinator_home, capsys):
    code, _ = _run(monkeypatch, tmp_path, coordinator_home, {"status": "finished", "rounds": []}, run_name="")
    assert code == 0
    assert str(coordinator_home.resolve() / "runs" / "run-42" / "report.json") in capsys.readouterr().out


# ---- the trust boundary's commands: TLS by default, insecure only when asked ----

def test_coordinator_run_refuses_a_superlink_without_a_ca(tmp_path, coordinator_home, capsys):
    code = cli.main(["coordinator", "run", "--home", str(coordinator_home), "--study", STUDY,
                     "--superlink", "10.1.2.3:18000", "--flwr-home", str(tmp_path / ".flwr")])
    assert code == 2
    assert "no CA certificate for the SuperLink at 10.1.2.3:18000" in capsys.readouterr().err


def test_node_start_needs_the_consortium_ca_unless_insecure(node_home, capsys):
    assert cli.main(["node", "start", "--home", str(node_home)]) == 2
    assert "--root-certificates" in capsys.readouterr().err
    assert (node_home / "keys" / "supernode_auth").stat().st_mode & 0o077 == 0  # made by node init, owner-only


def test_node_start_runs_the_supernode_with_tls_and_its_key(node_home, monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(os, "execve", lambda path, argv, env: seen.update(argv=argv))
    cli.main(["node", "start", "--home", str(node_home), "--superlink", "link.example:8000",
              "--root-certificates", str(tmp_path / "ca.pem")])
    argv = seen["argv"]
    assert "--insecure" not in argv
    assert argv[argv.index("--root-certificates") + 1] == str(tmp_path / "ca.pem")
    assert argv[argv.index("--auth-supernode-private-key") + 1] == str(node_home.resolve() / "keys" / "supernode_auth")
    assert "--superexec-auth-secret-file" in argv and argv[argv.index("--superlink") + 1] == "link.example:8000"


def test_chain_start_refuses_a_non_loopback_host_and_says_why(capsys):
    assert cli.main(["chain", "start", "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "unlocks its funded accounts" in err and "--allow-remote-dev-chain" in err
    assert cli.build_parser().parse_args(["chain", "start", "--host", "0.0.0.0",
                                          "--allow-remote-dev-chain"]).allow_remote_dev_chain


def test_coordinator_superlink_is_secure_unless_insecure_is_asked_for():
    parser = cli.build_parser()
    args = parser.parse_args(["coordinator", "superlink"])
    assert (args.insecure, args.port, args.control_port) == (False, 8000, 9093)
    assert parser.parse_args(["coordinator", "superlink", "--insecure"]).insecure


def test_ca_commands_issue_revoke_and_write_the_crl(tmp_path, capsys):
    from cryptography import x509

    from coordinator import ca as cax

    ca_dir = tmp_path / "ca"
    assert cli.main(["coordinator", "ca", "init", "--ca-dir", str(ca_dir)]) == 0
    assert cli.main(["coordinator", "ca", "init", "--ca-dir", str(ca_dir)]) == 2  # never replaces a CA
    assert cli.main(["coordinator", "ca", "issue-server", "fleet-gateway", "--ca-dir", str(ca_dir),
                     "--out", str(tmp_path / "tls"), "--dns", "link.example", "--ip", "127.0.0.1", "--days", "7"]) == 0
    assert cli.main(["coordinator", "ca", "issue-client", "hospital-a", "--ca-dir", str(ca_dir),
                     "--out", str(tmp_path / "tls")]) == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "tls" / "fleet-gateway.pem").read_bytes())
    capsys.readouterr()
    assert cli.main(["coordinator", "ca", "revoke", str(cert.serial_number), "--ca-dir", str(ca_dir)]) == 0
    authority = cax.load_ca(ca_dir)
    assert cax.is_revoked(ca_dir / "crl.pem", authority.cert, cert)
    assert cli.main(["coordinator", "ca", "crl", "--ca-dir", str(ca_dir)]) == 0
    assert cli.main(["coordinator", "ca", "revoke", "12345", "--ca-dir", str(ca_dir)]) == 2  # not issued here


def test_nodes_sync_takes_account_and_key_file_pairs(capsys):
    assert cli.main(["coordinator", "nodes", "sync", "--key", "no-equals-sign"]) == 2
    assert "ACCOUNT=PUBLIC_KEY_FILE" in capsys.readouterr().err


# ---- chain start as a real process: fund an account, then SIGTERM stops anvil ----

@pytest.mark.e2e
@pytest.mark.slow
def test_chain_start_funds_and_stops_anvil_on_sigterm(tmp_path, capsys):
    port = processes.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "chain", "start", "--port", str(port), "--log", str(tmp_path / "anvil.log"),
         "--state", str(tmp_path / "chain-state.json")],
        cwd=processes.PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline()  # printed once anvil answers JSON-RPC
        assert f"anvil serving JSON-RPC at http://127.0.0.1:{port}" in line, line + process.stdout.read()
        assert _port_open(port)

        address = Account.create().address
        url = f"http://127.0.0.1:{port}"
        assert cli.main(["chain", "fund", address, "--ether", "2", "--rpc-url", url]) == 0
        assert f"sent 2 ether to {address}; its balance is 2 ether" in capsys.readouterr().out

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while _port_open(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _port_open(port), "anvil still listens after SIGTERM"
        assert (tmp_path / "chain-state.json").exists(), "anvil kept no state file"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def test_bench_loads_this_projects_benchmarks_not_the_one_opacus_installs(tmp_path):
    """Opacus 1.6 ships a top-level `benchmarks` package; the console script must run ours."""
    # Under the name a wheel installs it as (tests/deploy/test_wheel.py), and its modules found under that name.
    code = ("import sys, importlib.util; sys.path = [p for p in sys.path if p not in ('', '.')]; "
            "from deploy import cli; b = cli._our_benchmarks(); print(b.__file__); print(sorted(b.NAMES)); "
            "print(b.__name__, importlib.util.find_spec('.ledger', b.__name__).name)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0].endswith("benchmarks/__init__.py") and "site-packages" not in out.splitlines()[0]
    assert "ledger" in out and "training" in out
    assert out.splitlines()[-1] == "twinledger_benchmarks twinledger_benchmarks.ledger"
