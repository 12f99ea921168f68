"""The launch path's security defaults, without starting Flower: certificates, commands, `flwr` connections,
the record of links started on this machine, and admitting node keys."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from coordinator import admission
from coordinator import processes as cp
from deploy import processes
from node import node_keys


@pytest.fixture(autouse=True)
def links_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TWINLEDGER_LINKS_DIR", str(tmp_path / "links"))
    monkeypatch.delenv(cp.INSECURE_LINKS_ENV, raising=False)
    return tmp_path / "links"


def _sans(path: Path) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(sans.get_values_for_type(x509.DNSName)), {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def test_a_dev_ca_is_made_once_and_names_what_each_side_dials(tmp_path):
    tls = cp.link_tls(tmp_path / "state", public_host="10.0.0.5")
    assert tls.ca_cert == tmp_path / "state" / "ca" / "ca.pem"
    assert _sans(tls.superlink_cert) == ({"localhost"}, {"127.0.0.1"})  # loopback only: its one listener
    dns, ips = _sans(tls.gateway_cert)
    assert "localhost" in dns and {"127.0.0.1", "10.0.0.5"} <= ips
    assert tls.superlink_key.stat().st_mode & 0o077 == 0
    before = tls.gateway_cert.read_bytes()
    again = cp.link_tls(tmp_path / "state", public_host="10.0.0.5")  # a restart: same CA, certificates still fresh
    assert again.ca_cert.read_bytes() == tls.ca_cert.read_bytes() and again.gateway_cert.read_bytes() == before
    moved = cp.link_tls(tmp_path / "state", public_host="link.example")  # a new public name: a new certificate
    assert "link.example" in _sans(moved.gateway_cert)[0]


def test_an_operators_ca_issues_the_link_certificates(tmp_path):
    from coordinator import ca as cax

    authority = cax.create_ca(tmp_path / "consortium-ca")
    tls = cp.link_tls(tmp_path / "state", ca_dir=tmp_path / "consortium-ca")
    assert tls.ca_cert == authority.cert_path and not (tmp_path / "state" / "ca").exists()


def test_with_only_the_ca_certificate_here_the_link_uses_certificates_issued_elsewhere(tmp_path):
    from coordinator import ca as cax

    authority = cax.create_ca(tmp_path / "operator-ca")
    public = tmp_path / "coordinator-ca"
    public.mkdir()
    (public / "ca.pem").write_bytes(authority.cert_path.read_bytes())
    with pytest.raises(processes.ProcessError, match="holds no CA key"):
        cp.link_tls(tmp_path / "state", ca_dir=public)
    for service in ("superlink", "fleet-gateway"):
        cax.issue_server_certificate(authority, tmp_path / "state" / "tls", service, ip_addresses=["127.0.0.1"])
    tls = cp.link_tls(tmp_path / "state", ca_dir=public)
    assert tls.ca_cert == public / "ca.pem" and tls.gateway_key == tmp_path / "state" / "tls" / "fleet-gateway.key"
    assert not (public / "ca.key").exists()


def test_the_superlink_command_is_tls_with_node_auth_unless_insecure(tmp_path):
    tls = cp.link_tls(tmp_path)
    secure = cp.superlink_command(database=tmp_path / "s.db", host="127.0.0.1", port=9, tls=tls)
    assert "--insecure" not in secure and "--enable-supernode-auth" in secure
    for flag, path in (("--ssl-certfile", tls.superlink_cert), ("--ssl-keyfile", tls.superlink_key),
                       ("--ssl-ca-certfile", tls.ca_cert)):
        assert secure[secure.index(flag) + 1] == str(path)
    assert "--insecure" in cp.superlink_command(database=tmp_path / "s.db", host="127.0.0.1", port=9)


def test_a_flwr_connection_needs_a_ca_unless_explicitly_insecure(tmp_path):
    with pytest.raises(processes.ProcessError, match="no CA certificate"):
        processes.write_flower_federation(tmp_path / "f", name="x", superlink_port=processes.free_port())
    processes.write_flower_federation(tmp_path / "f", name="x", superlink_port=8000, host="link.example",
                                      root_certificates=tmp_path / "ca.pem")
    text = (tmp_path / "f" / "config.toml").read_text()
    assert f'root-certificates = "{tmp_path / "ca.pem"}"' in text and "insecure" not in text
    processes.write_flower_federation(tmp_path / "f", name="x", superlink_port=8000, insecure=True)
    assert "insecure = true" in (tmp_path / "f" / "config.toml").read_text()


@dataclass
class _FakeProcess:
    pid: int
    args: list = field(default_factory=list)


def _link(pid: int, *, fleet: int, control: int, ca: Path | None) -> cp.SuperLink:
    return cp.SuperLink("superlink", _FakeProcess(pid), Path("/dev/null"), fleet_address=f"127.0.0.1:{fleet}",
                        control_address=f"127.0.0.1:{control}", root_certificates=ca)


def test_the_operators_flwr_goes_to_the_control_address_of_a_link_started_here(tmp_path):
    link = _link(os.getpid(), fleet=18000, control=19093, ca=tmp_path / "ca.pem")
    cp.remember_link(link)
    assert cp.find_link(18000) == cp.find_link(19093) != None  # noqa: E711 - both ports name it
    processes.write_flower_federation(tmp_path / "f", name="op", superlink_port=18000)
    text = (tmp_path / "f" / "config.toml").read_text()
    assert 'address = "127.0.0.1:19093"' in text and f'root-certificates = "{tmp_path / "ca.pem"}"' in text
    cp.forget_link(link)
    assert cp.find_link(18000) is None


def test_a_record_of_a_link_that_is_gone_is_ignored():
    gone = subprocess.Popen(["true"])
    gone.wait()
    cp.remember_link(_link(gone.pid, fleet=18001, control=19094, ca=None))
    assert cp.find_link(18001) is None


def test_a_supernode_is_not_started_without_a_ca(tmp_path):
    with pytest.raises(processes.ProcessError, match="no CA certificate"):
        processes.start_supernode(name="h", superlink_port=processes.free_port(), port=processes.free_port(),
                                  node_home=tmp_path / "h", flwr_home=tmp_path / "f", log_path=tmp_path / "h.log")


def test_insecure_links_is_scoped():
    with processes.insecure_links():
        assert os.environ[cp.INSECURE_LINKS_ENV] == "1"
    assert cp.INSECURE_LINKS_ENV not in os.environ


class _FakeAdmin:
    def __init__(self, nodes):
        self.nodes_, self.registered, self.unregistered = list(nodes), [], []

    def nodes(self):
        return self.nodes_

    def register(self, pem, name):
        self.registered.append(name)
        self.nodes_.append(type("Node", (), {"node_id": 100 + len(self.registered), "public_key": pem,
                                             "status": "registered"})())
        return 100 + len(self.registered)

    def unregister(self, node_id):
        self.unregistered.append(node_id)


def _pem(tmp_path: Path, name: str) -> bytes:
    keys = node_keys.generate_node_keys(tmp_path / name)
    return admission.pem_from_key_file(keys.public_key)


def test_admit_registers_only_missing_keys_and_removes_none(tmp_path):
    present, new = _pem(tmp_path, "a"), _pem(tmp_path, "b")
    other = type("Node", (), {"node_id": 7, "public_key": _pem(tmp_path, "c"), "status": "online"})()
    admin = _FakeAdmin([type("Node", (), {"node_id": 5, "public_key": present, "status": "online"})(), other])
    assert admission.admit(admin, {"a": present, "b": new}) == {"a": 5, "b": 101}
    assert admin.registered == ["b"] and admin.unregistered == []
    assert admission.admit(admin, {"b": new}) == {"b": 101} and admin.registered == ["b"]


def test_key_files_convert_to_what_flower_and_the_chain_hold(tmp_path):
    keys = node_keys.generate_node_keys(tmp_path / "k")
    key = node_keys.load_public_key(keys.public_key)
    assert admission.pem_from_key_file(keys.public_key) == node_keys.public_key_pem(key)
    assert admission.chain_key_from_pem(node_keys.public_key_pem(key)) == node_keys.chain_node_key(key)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    (tmp_path / "rsa.pub").write_bytes(rsa_key.public_bytes(serialization.Encoding.OpenSSH,
                                                            serialization.PublicFormat.OpenSSH))
    with pytest.raises(ValueError, match="EC key"):
        admission.pem_from_key_file(tmp_path / "rsa.pub")
