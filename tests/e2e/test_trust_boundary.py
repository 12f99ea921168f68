"""The federation's trust boundary through the real launch path (deploy/processes.py, as the demo starts it).

`start_superlink` with its defaults must give: TLS on every port, SuperNode authentication, and a hospitals'
address that serves the Fleet API only. Each test is an attack from the hospitals' side of that boundary.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator import admission
from deploy import processes
from node import node_keys

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class Link:
    root: Path
    link: processes.SuperLink
    port: int  # what the callers pass around as "the SuperLink port": the hospitals' address
    flwr_home: Path

    @property
    def control_port(self) -> int:
        return int(self.link.control_address.rpartition(":")[2])


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Link]:
    root = tmp_path_factory.mktemp("boundary")
    port = processes.free_port()
    flwr_home = root / "flower"
    started = processes.start_superlink(port=port, state_dir=root / "superlink", flwr_home=flwr_home,
                                        health_address=f"127.0.0.1:{processes.free_port()}")
    try:
        yield Link(root, started, port, flwr_home)
    finally:
        started.stop()


def test_the_superlink_serves_flowers_grpc_health_service_for_a_probe(link: Link):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    command = link.link.process.args
    address = command[command.index("--health-server-address") + 1]
    with grpc.insecure_channel(address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def _status(link: Link, home: Path) -> str | None:
    """The SuperLink's status for the node key of `home` (None: it never heard of that key)."""
    pem = node_keys.public_key_pem(node_keys.load_public_key(node_keys.node_keys_of(home).public_key))
    admin = admission.ControlAdmin(link.link.control_address, link.link.root_certificates)
    try:
        found = [node.status for node in admin.nodes()
                 if admission.fingerprint(node.public_key) == admission.fingerprint(pem)]
    finally:
        admin.close()
    return found[-1] if found else None


def _wait(condition, *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False


def test_the_default_link_is_tls_with_node_auth_and_the_superlink_on_loopback_only(link: Link) -> None:
    assert not link.link.insecure and link.link.gateway is not None and link.link.gateway.alive()
    assert link.link.control_address.startswith("127.0.0.1:") and link.control_port != link.port
    command = (link.root / "superlink" / "superlink.log").read_text()
    assert processes.https_answers(f"127.0.0.1:{link.port}", link.link.root_certificates)
    assert "--insecure" not in " ".join(link.link.process.args)
    assert "--enable-supernode-auth" in link.link.process.args and command  # the SuperLink logged its start


def test_a_supernode_with_an_unregistered_key_cannot_join_and_an_admitted_one_can(link: Link) -> None:
    rogue_home, honest_home = link.root / "rogue", link.root / "honest"
    rogue = processes.start_supernode(
        name="rogue", superlink_port=link.port, port=processes.free_port(), node_home=rogue_home,
        flwr_home=link.root / "rogue-flwr", log_path=link.root / "rogue.log", warm=False, admit=False)
    honest = processes.start_supernode(
        name="honest", superlink_port=link.port, port=processes.free_port(), node_home=honest_home,
        flwr_home=link.root / "honest-flwr", log_path=link.root / "honest.log", warm=False)
    try:
        assert _wait(lambda: _status(link, honest_home) == "online", timeout_s=40), \
            (link.root / "honest.log").read_text()[-2000:]
        assert _status(link, rogue_home) is None  # never registered, never online
        log = (link.root / "superlink" / "superlink.log").read_text()
        assert 'activate-node HTTP/1.1" 412' in log  # refused: no SuperNode with that public key
    finally:
        rogue.stop()
        honest.stop()


@pytest.mark.parametrize("which", ["hospitals' address (gateway)", "SuperLink (loopback)"])
def test_a_plain_http_client_gets_nowhere(link: Link, which: str) -> None:
    port = link.port if which.startswith("hospitals") else link.control_port
    for path in ("/health", "/v1/control/list-runs", "/v1/fleet/pull-messages", "/v1/runtime/acquire-task"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode())
            try:
                answer = raw.recv(1024)
            except ConnectionResetError:
                answer = b""
        assert not answer.startswith(b"HTTP/"), (which, path, answer)


def _flwr(flwr_home: Path, *args: str) -> dict:
    done = subprocess.run([str(processes.VENV_BIN / "flwr"), *args, "--format", "json"],
                          env=processes.flower_env(flwr_home), capture_output=True, timeout=90, check=False,
                          cwd=processes.FLOWER_APP_DIR)
    return json.loads(done.stdout[done.stdout.index(b"{"):])


def test_run_submission_from_a_hospitals_side_is_refused(link: Link) -> None:
    """A hospital trusts the CA (it must, to reach the Fleet API) and dials the address it is given."""
    hospital = link.root / "hospital-flwr"
    processes.write_flower_federation(hospital, name="from-hospital", superlink_port=link.port,
                                      root_certificates=link.link.root_certificates)
    assert f'"127.0.0.1:{link.port}"' in (hospital / "config.toml").read_text()
    listed = _flwr(hospital, "ls", "from-hospital")
    assert not listed["success"], listed
    submitted = _flwr(hospital, "run", str(processes.FLOWER_APP_DIR), "from-hospital")
    assert not submitted["success"], submitted
    # The operator, on the coordinator's machine, is sent to the loopback Control API given the same port.
    processes.write_flower_federation(link.flwr_home, name="operator", superlink_port=link.port)
    assert link.link.control_address in (link.flwr_home / "config.toml").read_text()
    assert _flwr(link.flwr_home, "ls", "operator")["success"]


def test_the_allowlist_follows_the_chain_without_touching_node_homes(
    tmp_path: Path, anvil_url: str, artifacts: dict,
) -> None:
    """The demo's path: a node key recorded on chain is admitted by the SuperLink's node follower (nobody admits
    the node home's key), and suspending the hospital on chain shuts its SuperNode out."""
    from contracts import ledger as lg
    from coordinator.settings import CoordinatorSettings
    from deploy.consortium import Consortium

    consortium = Consortium.deploy(lg.connect(anvil_url), rpc_url=anvil_url, deployment_file=tmp_path / "dep.json",
                                   artifacts=artifacts, ether=10)
    node = consortium.add_node("followed", tmp_path / "followed")  # records its node key on chain
    coordinator_home = tmp_path / "coordinator"
    CoordinatorSettings(home=coordinator_home, rpc_url=anvil_url, deployment_file=tmp_path / "dep.json").save()
    started = processes.start_superlink(port=processes.free_port(), state_dir=tmp_path / "superlink",
                                        flwr_home=tmp_path / "flower", follow_home=coordinator_home)
    link = Link(tmp_path, started, int(started.fleet_address.rpartition(":")[2]), tmp_path / "flower")
    supernode_ = None
    try:
        assert started.follower is not None and started.follower.alive()
        supernode_ = processes.start_supernode(
            name="followed", superlink_port=link.port, port=processes.free_port(), node_home=node.settings.home,
            flwr_home=tmp_path / "node-flwr", log_path=tmp_path / "followed.log", warm=False, admit=False)
        assert _wait(lambda: _status(link, node.settings.home) == "online", timeout_s=40), \
            (tmp_path / "superlink" / "node-follower.log").read_text()[-2000:]
        consortium.operator.set_hospital_suspended(node.ledger.address, True)
        assert _wait(lambda: _status(link, node.settings.home) == "unregistered", timeout_s=20)
        assert _wait(lambda: not supernode_.alive(), timeout_s=30)  # refused at its next request, it stops
    finally:
        if supernode_ is not None:
            supernode_.stop()
        started.stop()
