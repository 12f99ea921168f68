"""The web apps serve HTTPS directly with a certificate from the consortium CA, and a plain-HTTP client gets
nowhere; plain HTTP is served only when asked for explicitly (issue 11 item 1, the web apps)."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.responses import HTMLResponse
from pydantic_settings import SettingsConfigDict

from coordinator import ca as cax
from federation.web.app import create_web_app
from federation.web.serving import InsecureServing, WebServerSettings, uvicorn_options


class _Settings(WebServerSettings):
    model_config = SettingsConfigDict(env_prefix="TWINLEDGER_TEST_WEB_")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def issued(tmp_path):
    authority = cax.create_ca(tmp_path / "ca")
    cert = cax.issue_server_certificate(authority, tmp_path / "tls", "web", dns_names=["localhost"],
                                        ip_addresses=["127.0.0.1"])
    return authority, cert


def test_serving_without_a_certificate_needs_the_explicit_development_flag(issued, tmp_path):
    with pytest.raises(InsecureServing, match="--insecure-http"):
        uvicorn_options(_Settings())
    assert uvicorn_options(_Settings(), insecure_http=True) == {}
    _, cert = issued
    with pytest.raises(InsecureServing, match="both"):
        uvicorn_options(_Settings(tls_certfile=cert.cert_path))
    with pytest.raises(InsecureServing, match="no such"):
        uvicorn_options(_Settings(tls_certfile=tmp_path / "missing.pem", tls_keyfile=cert.key_path))
    options = uvicorn_options(_Settings(tls_certfile=cert.cert_path, tls_keyfile=cert.key_path))
    assert options == {"ssl_certfile": str(cert.cert_path), "ssl_keyfile": str(cert.key_path)}


def test_an_app_serves_https_with_the_consortium_certificate_and_plain_http_gets_nowhere(issued):
    authority, cert = issued
    app = create_web_app("tls", static_dir=None, chain_name="the ledger",
                         error_page=lambda request, message, status: HTMLResponse(message, status_code=status))

    @app.get("/api/ping")
    def ping() -> dict:
        return {"ok": True}

    settings = _Settings(tls_certfile=cert.cert_path, tls_keyfile=cert.key_path)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False,
                                          **uvicorn_options(settings)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        answer = httpx.get(f"https://localhost:{port}/api/ping", verify=str(authority.cert_path), timeout=5)
        assert answer.status_code == 200 and answer.json() == {"ok": True}
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/api/ping", timeout=5)
        with pytest.raises(httpx.ConnectError):  # a certificate from elsewhere is not trusted
            httpx.get(f"https://localhost:{port}/api/ping", timeout=5)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_serve_commands_refuse_plain_http_unless_asked(tmp_path, monkeypatch):
    from node import admin
    from node.console import cli as node_console
    from node.portal import admin as portal

    admin.init_node(tmp_path / "node", hospital="cleveland", rpc_url="unused", deployment_file=None)
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append(options))
    for serve in (portal.serve, node_console.serve):
        with pytest.raises(InsecureServing, match="--insecure-http"):
            serve(tmp_path / "node", port=1)
        serve(tmp_path / "node", port=1, insecure_http=True)
    assert served and all("ssl_certfile" not in options and options["proxy_headers"] is False for options in served)
