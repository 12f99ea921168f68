"""Flower 1.41 with TLS from the consortium CA and SuperNode authentication: the recipe, proven on real processes.

Starts `flower-superlink` and `flower-supernode` directly (no launcher of ours) the way a production
deployment must: TLS on the SuperLink's one port (Fleet, Control and Runtime APIs), certificates from
`coordinator.ca`, `--enable-supernode-auth`, node keys from `node.node_keys` registered with
`flwr supernode register`, and SuperNodes dialling the Fleet-only gateway (`coordinator.fleet_gateway`)
rather than the SuperLink, whose Control API has no authentication. See /work/plan/flower-trust.md (issue 11) for the facts behind each step.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=E0611
from flwr.supercore.control import ControlHttpClient
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

from coordinator import admission
from coordinator import ca as cax
from node import app_gate, node_keys

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(flwr_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the SuperLink starts `flower-superexec`
        "PYTHONPATH": str(REPO),
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                                start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _wait(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class Federation:
    """A TLS SuperLink with SuperNode authentication, and what a test needs to reach it."""

    root: Path
    ca: cax.CertificateAuthority
    port: int
    gateway_port: int
    database: Path
    env: dict[str, str]
    log: Path
    processes: list[subprocess.Popen[bytes]]

    def flwr(self, *args: str) -> dict:
        """Run `flwr ... <args> secure --format json` as the operator and return its JSON answer."""
        done = subprocess.run([str(BIN / "flwr"), *args, "secure", "--format", "json"], env=self.env,
                              capture_output=True, timeout=60, check=False)
        return json.loads(done.stdout[done.stdout.index(b"{"):])

    def register(self, keys: node_keys.NodeKeys, name: str) -> int:
        answer = self.flwr("supernode", "register", str(keys.public_key), "--name", name)
        assert answer["success"], answer
        return int(answer["node-id"])

    def start_supernode(self, keys: node_keys.NodeKeys, name: str, *extra: str, runtime_port: int | None = None,
                        node_config: str | None = None) -> subprocess.Popen[bytes]:
        proc = _start([
            str(BIN / "flower-supernode"), "--root-certificates", str(self.ca.cert_path),
            "--superlink", f"127.0.0.1:{self.gateway_port}", "--auth-supernode-private-key", str(keys.private_key),
            "--port", str(runtime_port or _free_port()), "--node-config", node_config or f'hospital-id="{name}"',
            *extra,
        ], self.root / f"supernode-{name}.log", self.env)
        self.processes.append(proc)
        return proc

    def control(self, port: int | None = None) -> ControlHttpClient:
        """A Control API client as any caller trusting the CA could build one (no credentials: none exist)."""
        return ControlHttpClient.from_server_address(
            server_address=f"127.0.0.1:{port or self.port}", insecure=False,
            root_certificates=self.ca.cert_path.read_bytes(),
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
        )

    def node_row(self, node_id: int) -> tuple[str, bytes] | None:
        """(status, public key PEM) of a node in the SuperLink's state DB (signed 64-bit ids there)."""
        signed = node_id - (1 << 64) if node_id >= (1 << 63) else node_id
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as db:
            return db.execute("SELECT status, public_key FROM node WHERE node_id = ?", (signed,)).fetchone()


def _https_health(port: int, ca_path: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_path))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", context=context, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("trust")
    authority = cax.create_ca(root / "ca")
    tls = cax.issue_server_certificate(authority, root / "tls", "superlink",
                                       dns_names=["localhost"], ip_addresses=["127.0.0.1"], valid_days=1)
    port = _free_port()
    flwr_home = root / "flwr"
    flwr_home.mkdir()
    # The operator's `flwr` trusts the consortium CA: `root-certificates` in its SuperLink connection.
    (flwr_home / "config.toml").write_text(
        f'[superlink.secure]\naddress = "127.0.0.1:{port}"\nroot-certificates = "{authority.cert_path}"\n'
    )
    env = _env(flwr_home)
    database = root / "state" / "link.db"
    database.parent.mkdir()
    log = root / "superlink.log"
    superlink = _start([
        str(BIN / "flower-superlink"), "--ssl-certfile", str(tls.cert_path), "--ssl-keyfile", str(tls.key_path),
        "--ssl-ca-certfile", str(authority.cert_path), "--enable-supernode-auth",
        "--database", str(database), "--port", str(port), "--disable-runtime-dependency-installation",
    ], log, env)
    # Hospitals dial the Fleet-only gateway; the SuperLink itself stays on loopback for the coordinator.
    gateway_tls = cax.issue_server_certificate(authority, root / "tls", "fleet-gateway",
                                               dns_names=["localhost"], ip_addresses=["127.0.0.1"], valid_days=1)
    gateway_port = _free_port()
    gateway = _start([
        sys.executable, "-m", "coordinator.fleet_gateway", "--listen", f"127.0.0.1:{gateway_port}",
        "--upstream", f"127.0.0.1:{port}", "--certfile", str(gateway_tls.cert_path),
        "--keyfile", str(gateway_tls.key_path), "--upstream-ca", str(authority.cert_path),
    ], root / "gateway.log", env)
    fed = Federation(root, authority, port, gateway_port, database, env, log, [superlink, gateway])
    try:
        for proc, where, what in ((superlink, port, "SuperLink"), (gateway, gateway_port, "gateway")):
            _wait(lambda: _https_health(where, authority.cert_path) or proc.poll() is not None,  # noqa: B023
                  timeout_s=30, what=f"the {what}'s HTTPS health endpoint")
            assert proc.poll() is None, (log if what == "SuperLink" else root / "gateway.log").read_text()[-2000:]
        yield fed
    finally:
        for proc in reversed(fed.processes):
            _stop(proc)


def test_an_admitted_node_connects_through_the_gateway_and_is_shut_out_once_suspended(
    federation: Federation,
) -> None:
    keys = node_keys.generate_node_keys(federation.root / "h1-keys")
    on_chain = {"0xH1": node_keys.chain_node_key(node_keys.load_public_key(keys.public_key))}
    admin = admission.ControlAdmin(f"127.0.0.1:{federation.port}", federation.ca.cert_path)
    try:
        node_id = admission.sync(admin, on_chain).registered["0xH1"]
        assert federation.node_row(node_id)[0] == "registered"
        node = federation.start_supernode(keys, "h1")
        _wait(lambda: federation.node_row(node_id)[0] == "online" or node.poll() is not None,
              timeout_s=40, what="the admitted SuperNode to come online")
        assert node.poll() is None, (federation.root / "supernode-h1.log").read_text()[-2000:]
        # The link keeps the key the hospital made; the coordinator maps the node to its hospital by that key.
        assert admission.hospitals_of(admin.nodes(), on_chain) == {node_id: "0xH1"}
        assert admission.sync(admin, on_chain).registered == {}

        admission.sync(admin, {})  # the hospital is suspended on chain
        # Its next signed request names a node id its key no longer holds: 401, and the SuperNode stops.
        _wait(lambda: node.poll() is not None, timeout_s=20, what="the suspended hospital's SuperNode to stop")
        assert federation.node_row(node_id)[0] == "unregistered"
    finally:
        admin.close()


def test_a_node_whose_key_is_not_registered_is_refused(federation: Federation) -> None:
    keys = node_keys.generate_node_keys(federation.root / "rogue-keys")
    rogue = federation.start_supernode(keys, "rogue", "--max-retries", "1", "--max-wait-time", "5")
    _wait(lambda: rogue.poll() is not None, timeout_s=45, what="the unregistered SuperNode to give up")
    output = (federation.root / "supernode-rogue.log").read_text()
    assert rogue.returncode != 0
    assert "Failed to activate SuperNode" in output
    assert "activate-node HTTP/1.1\" 412" in federation.log.read_text()


@pytest.mark.parametrize("which", ["superlink", "gateway"])
def test_a_plain_http_client_gets_no_answer_from_either_port(federation: Federation, which: str) -> None:
    port = federation.port if which == "superlink" else federation.gateway_port
    for path in ("/health", "/v1/control/list-runs", "/v1/fleet/pull-messages"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode())
            try:
                answer = raw.recv(1024)
            except ConnectionResetError:
                answer = b""
        assert not answer.startswith(b"HTTP/"), answer


@pytest.mark.parametrize("which", ["superlink", "gateway"])
def test_a_tls_client_that_does_not_trust_the_consortium_ca_is_refused(federation: Federation, which: str) -> None:
    port = federation.port if which == "superlink" else federation.gateway_port
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"https://127.0.0.1:{port}/health", context=ssl.create_default_context(), timeout=5)


def test_the_gateway_serves_no_control_or_runtime_api(federation: Federation) -> None:
    keys = node_keys.generate_node_keys(federation.root / "via-gateway")
    key = node_keys.public_key_pem(node_keys.load_public_key(keys.public_key))
    with pytest.raises(Exception, match="404|Not Found|not found"):
        federation.control(federation.gateway_port).RegisterNode(RegisterNodeRequest(public_key=key, name="x"))
    context = ssl.create_default_context(cafile=str(federation.ca.cert_path))
    for method, path in (("POST", "/v1/control/list-runs"), ("POST", "/v1/runtime/acquire-task"),
                         ("GET", "/docs"), ("GET", "/openapi.json"), ("POST", "/v1/fleet/../control/list-runs")):
        request = urllib.request.Request(f"https://127.0.0.1:{federation.gateway_port}{path}", method=method,
                                         data=b"" if method == "POST" else None)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, context=context, timeout=5)
        assert refused.value.code == 404, path


def test_flower_alone_lets_whoever_reaches_the_port_register_a_key(federation: Federation) -> None:
    """The gap TwinLedger must close itself: flwr 1.41's Control API has no authentication without a licence
    (OIDC is Flower's enterprise build), and it shares the Fleet port. A hospital that trusts the CA (it must,
    to reach the Fleet API) can register any key, submit runs, and stop runs. Hence the Fleet-only gateway
    (and `admission.sync` removing keys the chain does not name). When this test fails, Flower has started
    authenticating its Control API."""
    keys = node_keys.generate_node_keys(federation.root / "self-registered")
    node_id = federation.register(keys, "anyone")  # `flwr supernode register`, with nothing but the public CA cert
    assert federation.node_row(node_id)[0] == "registered"


APP_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "1.0.0"
dependencies = ["flwr==1.41.0"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "twinledger-test"

[tool.flwr.app.components]
serverapp = "{name}.app:server"
clientapp = "{name}.app:client"

[tool.flwr.app.config]
result = ""
marker = ""
study-id = ""
"""

APP_CODE = """\
\"\"\"A one-message Flower app: the ServerApp queries every node and writes what came back.\"\"\"

import json
import time
from pathlib import Path

from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

server = ServerApp()
client = ClientApp()


@server.main()
def main(grid, context) -> None:
    deadline, nodes = time.time() + 30, []
    while not nodes and time.time() < deadline:
        nodes = list(grid.get_node_ids())
        time.sleep(0.3)
    replies = grid.send_and_receive(
        [Message(RecordDict(), dst_node_id=node, message_type="query") for node in nodes], timeout=40)
    Path(str(context.run_config["result"])).write_text(json.dumps({{
        "replies": [{{"node": reply.metadata.src_node_id,
                     "error": reply.error.code if reply.has_error() else None,
                     "metrics": None if reply.has_error() else dict(reply.content["m"])}} for reply in replies],
        "keys": {{str(info.node_id): info.public_key.decode() for info in grid.get_nodes()}},
    }}))


@client.query()
def query(msg, context):
    Path(str(context.run_config["marker"])).write_text("{name}'s ClientApp ran here")
    return Message(RecordDict({{"m": MetricRecord({{"answer": 1}})}}), reply_to=msg)
"""


def _write_app(directory: Path, name: str) -> Path:
    (directory / name).mkdir(parents=True)
    (directory / "pyproject.toml").write_text(APP_PYPROJECT.format(name=name))
    (directory / name / "__init__.py").write_text("")
    (directory / name / "app.py").write_text(APP_CODE.format(name=name))
    return directory


def _run_app(federation: Federation, app: Path, result: Path, marker: Path, *, study: str = "") -> dict:
    done = subprocess.run(
        [str(BIN / "flwr"), "run", str(app), "secure",
         "--run-config", f'result="{result}" marker="{marker}" study-id="{study}"'],
        env=federation.env, capture_output=True, timeout=90, check=False, cwd=app,
    )
    assert done.returncode == 0, done.stdout.decode()[-2000:] + done.stderr.decode()[-2000:]
    _wait(result.exists, timeout_s=90, what=f"the ServerApp of {app.name} to write its result")
    return json.loads(result.read_text())


def test_a_node_runs_only_the_approved_app_and_never_code_from_the_fab_it_is_sent(
    federation: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    approved_app = _write_app(tmp_path / "approved", "trustapproved")
    foreign_app = _write_app(tmp_path / "foreign", "trustforeign")
    approved = app_gate.installed_app_digest(approved_app)
    monkeypatch.syspath_prepend(str(approved_app))  # "installed at the hospital"
    keys = node_keys.generate_node_keys(tmp_path / "h3-keys")
    admin = admission.ControlAdmin(f"127.0.0.1:{federation.port}", federation.ca.cert_path)
    try:
        admission.sync(admin, {"0xH3": node_keys.chain_node_key(node_keys.load_public_key(keys.public_key))})
    finally:
        admin.close()
    runtime_port = _free_port()
    federation.start_supernode(keys, "h3", "--isolation", "process", runtime_port=runtime_port)
    stop = threading.Event()
    executor = threading.Thread(target=app_gate.serve_gated_tasks, args=(f"127.0.0.1:{runtime_port}", stop), kwargs={
        "installed_app": "trustapproved.app:client", "installed_digest": approved,
        "approved_digest": lambda context: approved,  # the study's digest on chain, once the contract holds it
    }, daemon=True)
    executor.start()
    try:
        foreign = _run_app(federation, foreign_app, tmp_path / "foreign.json", tmp_path / "foreign-ran")
        assert [reply["error"] for reply in foreign["replies"]] == [app_gate.APP_NOT_APPROVED]
        assert not (tmp_path / "foreign-ran").exists()

        accepted = _run_app(federation, approved_app, tmp_path / "approved.json", tmp_path / "approved-ran")
        assert [reply["metrics"] for reply in accepted["replies"]] == [{"answer": 1}]
        assert (tmp_path / "approved-ran").read_text() == "trustapproved's ClientApp ran here"
        # The ServerApp's grid.get_nodes() names the key each node authenticated with: its hospital follows.
        (node_id,) = [reply["node"] for reply in accepted["replies"]]
        assert node_keys.key_fingerprint(accepted["keys"][str(node_id)].encode()) == node_keys.key_fingerprint(
            node_keys.load_public_key(keys.public_key))
    finally:
        stop.set()
        executor.join(timeout=10)


def test_a_node_runs_a_fab_only_when_its_study_recorded_that_fabs_digest_on_chain(
    federation: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anvil_url: str, artifacts: dict,
) -> None:
    """The warm SuperNode's gate (node/supernode.py approved_app_digest) asks the chain which app the run's study
    recorded: the installed app itself is refused (4010, its ClientApp never runs) for a study that recorded
    another app's digest, and runs for a study that recorded its own."""
    from contracts import ledger as lg
    from deploy.consortium import Consortium
    from node import supernode

    app = _write_app(tmp_path / "installed", "trustonchain")
    digest = app_gate.installed_app_digest(app)
    monkeypatch.syspath_prepend(str(app))
    consortium = Consortium.deploy(lg.connect(anvil_url), rpc_url=anvil_url, deployment_file=tmp_path / "dep.json",
                                   artifacts=artifacts, ether=10)
    node = consortium.add_node("h5", tmp_path / "h5")  # registered, its node key recorded on chain
    another_apps = consortium.propose_study(app_digest="ab" * 32)
    this_apps = consortium.propose_study(app_digest=digest)
    keys = node_keys.ensure_node_keys(node.settings.home)
    admin = admission.ControlAdmin(f"127.0.0.1:{federation.port}", federation.ca.cert_path)
    try:  # exactly this node: earlier tests' nodes are shut out
        admission.sync(admin, {node.ledger.address: node.ledger.node_key_of(node.ledger.address)})
    finally:
        admin.close()
    runtime_port = _free_port()
    federation.start_supernode(keys, "h5", "--isolation", "process", runtime_port=runtime_port,
                               node_config=f'node-home="{node.settings.home}"')
    stop = threading.Event()
    executor = threading.Thread(target=app_gate.serve_gated_tasks, args=(f"127.0.0.1:{runtime_port}", stop), kwargs={
        "installed_app": "trustonchain.app:client", "installed_digest": digest,
        "approved_digest": supernode.approved_app_digest,
    }, daemon=True)
    executor.start()
    try:
        refused = _run_app(federation, app, tmp_path / "refused.json", tmp_path / "refused-ran", study=str(another_apps))
        assert [reply["error"] for reply in refused["replies"]] == [app_gate.APP_NOT_APPROVED]
        assert not (tmp_path / "refused-ran").exists()

        ran = _run_app(federation, app, tmp_path / "ran.json", tmp_path / "ran-marker", study=str(this_apps))
        assert [reply["metrics"] for reply in ran["replies"]] == [{"answer": 1}]
        assert (tmp_path / "ran-marker").exists()
    finally:
        stop.set()
        executor.join(timeout=10)
