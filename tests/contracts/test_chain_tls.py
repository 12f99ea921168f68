"""The chain over HTTPS: the ledger client's URL rule, and anvil behind the TLS terminator (contracts/devchain/gateway.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from contracts import ledger as lg
from contracts.ledger.deployment import check_rpc_url


@pytest.mark.parametrize("url", ["https://chain.example.org:8443", "http://127.0.0.1:8545", "http://localhost:8545",
                                 "http://[::1]:8545", "http://127.0.0.2:8545"])
def test_https_anywhere_and_plain_http_to_loopback_are_accepted(url):
    check_rpc_url(url)


@pytest.mark.parametrize("url", ["http://chain.example.org:8545", "http://10.0.0.5:8545", "ws://127.0.0.1:8545",
                                 "chain.example.org:8545", ""])
def test_plain_http_to_another_machine_is_refused_unless_explicitly_allowed(url):
    with pytest.raises(lg.ChainUnavailable, match="https://"):
        check_rpc_url(url)
    with pytest.raises(lg.ChainUnavailable, match="https://"):
        lg.connect(url)  # refused before any request leaves
    if url.startswith("http://"):
        check_rpc_url(url, allow_plain_http=True)  # allow-plain-rpc: development only


def test_the_node_and_coordinator_settings_carry_the_chain_ca_and_the_flag(tmp_path, monkeypatch):
    from coordinator.settings import CoordinatorSettings
    from node.settings import NodeSettings

    NodeSettings(home=tmp_path, hospital="h", rpc_url="https://chain.example.org:8443",
                 chain_ca_file=tmp_path / "ca.pem").save()
    assert NodeSettings.load(tmp_path).chain_ca_file == tmp_path / "ca.pem"
    assert 'chain-ca-file = "' in (tmp_path / "node.toml").read_text()
    monkeypatch.setenv("TWINLEDGER_ALLOW_PLAIN_RPC", "true")  # one variable for every component, like the URL
    CoordinatorSettings(home=tmp_path / "c").save()
    assert CoordinatorSettings.load(tmp_path / "c").allow_plain_rpc is True


@pytest.mark.slow
def test_the_parties_reach_anvil_over_https_only(tmp_path: Path, anvil_url: str) -> None:
    from deploy import processes

    service, url, ca_cert = processes.start_chain_gateway(upstream=anvil_url, port=processes.free_port(),
                                                          ca_dir=tmp_path / "ca", tls_dir=tmp_path / "tls",
                                                          log_path=tmp_path / "gateway.log")
    try:
        assert url.startswith("https://127.0.0.1:")
        assert lg.connect(url, ca_file=ca_cert).eth.chain_id == lg.connect(anvil_url).eth.chain_id
        with pytest.raises(lg.ChainUnavailable):  # a certificate from no CA the client trusts
            lg.connect(url)
        port = int(url.rpartition(":")[2])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:  # plain HTTP gets no JSON-RPC
            raw.sendall(b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}')
            try:
                answer = raw.recv(1024)
            except ConnectionResetError:
                answer = b""
        assert not answer.startswith(b"HTTP/"), answer
    finally:
        service.stop()


def test_a_missing_chain_ca_file_is_named(tmp_path):
    with pytest.raises(lg.ChainUnavailable, match="chain-ca-file"):
        lg.connect("https://127.0.0.1:1", ca_file=tmp_path / "nowhere.pem")
