"""The Fleet-only gateway: Fleet calls reach the SuperLink byte for byte; nothing else gets past it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from coordinator import ca as cax
from coordinator.fleet_gateway import create_gateway


@pytest.fixture
def seen() -> list[httpx.Request]:
    return []


@pytest.fixture
def gateway(tmp_path: Path, seen: list[httpx.Request]) -> TestClient:
    authority = cax.create_ca(tmp_path / "ca")

    def superlink(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"\x08\x01", headers={"content-type": "application/protobuf",
                                                                "flwr-version": "1.41.0"})

    app = create_gateway("127.0.0.1:8000", upstream_ca=authority.cert_path, transport=httpx.MockTransport(superlink))
    with TestClient(app) as client:
        yield client


def test_a_fleet_call_reaches_the_superlink_with_its_body_and_node_auth_headers(
    gateway: TestClient, seen: list[httpx.Request],
) -> None:
    answer = gateway.post("/v1/fleet/pull-messages", content=b"\x0a\x02\x08\x07", headers={
        "content-type": "application/protobuf", "flwr-public-key": "cGs=", "flwr-signature": "c2ln",
        "flwr-timestamp": "2026-11-30T03:00:00+00:00", "x-forwarded-for": "10.0.0.9",
    })
    assert answer.status_code == 200
    assert answer.content == b"\x08\x01"
    assert answer.headers["content-type"] == "application/protobuf"
    (forwarded,) = seen
    assert str(forwarded.url) == "https://127.0.0.1:8000/v1/fleet/pull-messages"
    assert forwarded.content == b"\x0a\x02\x08\x07"
    assert forwarded.headers["flwr-public-key"] == "cGs="
    assert forwarded.headers["flwr-signature"] == "c2ln"
    assert forwarded.headers["flwr-timestamp"] == "2026-11-30T03:00:00+00:00"
    assert "x-forwarded-for" not in forwarded.headers
    assert forwarded.headers["host"] == "127.0.0.1:8000"


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/control/start-run"),
    ("POST", "/v1/control/register-node"),
    ("POST", "/v1/runtime/acquire-task"),
    ("POST", "/v1/fleet/start-run"),
    ("GET", "/v1/fleet/pull-messages"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("POST", "/v1/fleet/pull-messages/../../control/start-run"),
])
def test_everything_but_the_fleet_api_is_not_found_and_never_forwarded(
    gateway: TestClient, seen: list[httpx.Request], method: str, path: str,
) -> None:
    assert gateway.request(method, path).status_code == 404
    assert seen == []


def test_health_is_forwarded(gateway: TestClient, seen: list[httpx.Request]) -> None:
    assert gateway.get("/health").status_code == 200
    assert str(seen[0].url).endswith("/health")


def test_an_unreachable_superlink_is_a_502(tmp_path: Path) -> None:
    authority = cax.create_ca(tmp_path / "ca")

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    app = create_gateway("127.0.0.1:1", upstream_ca=authority.cert_path, transport=httpx.MockTransport(down))
    with TestClient(app) as client:
        assert client.post("/v1/fleet/activate-node", content=b"").status_code == 502
