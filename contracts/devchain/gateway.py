"""HTTPS in front of a chain node that speaks plain HTTP only (anvil): the parties reach the chain over TLS.

    python -m contracts.devchain.gateway --listen 0.0.0.0:8443 --upstream http://127.0.0.1:8545 \\
        --certfile tls/chain.pem --keyfile tls/chain.key

anvil serves JSON-RPC over plain HTTP and has no TLS option, so someone between a hospital and the chain could
answer its consent questions falsely. This terminator (the same pattern as coordinator/fleet_gateway.py: Python's
ssl through uvicorn, a certificate from the consortium CA, no cryptography of its own) accepts HTTPS and forwards
each `POST /` JSON-RPC body unchanged to the chain node, which stays on loopback; `GET /health` answers whether
the chain does; everything else is 404. The parties then use `https://chain.example.org:8443` with the CA
certificate as their `chain-ca-file` (contracts/ledger `connect`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from federation.logs import setup_logging
from federation.processes import Service, https_answers, reachable_host, start, wait_until

MAX_BODY_BYTES = 16 * 1024 * 1024  # a JSON-RPC batch of consent relays stays far below this


def _not_here(_: Request) -> Response:
    return JSONResponse({"error": "not found"}, status_code=404)


def create_chain_gateway(upstream: str, *, timeout_s: float = 60.0,
                         transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """The app forwarding JSON-RPC to `upstream` (the chain node's plain-HTTP URL, on loopback).

    Serve it with uvicorn and a certificate from the consortium CA. `transport` replaces the network (tests).
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=timeout_s, transport=transport) as client:
            app.state.client = client
            yield

    async def rpc(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request too large"}, status_code=413)
        try:
            answer = await request.app.state.client.post(
                upstream, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError:
            return JSONResponse({"error": "chain unreachable"}, status_code=502)
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")

    async def health(request: Request) -> Response:
        try:
            answer = await request.app.state.client.post(
                upstream, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
            ok = answer.is_success and "result" in answer.json()
        except (httpx.HTTPError, ValueError):
            ok = False
        return JSONResponse({"chain": "up" if ok else "down"}, status_code=200 if ok else 502)

    return Starlette(
        routes=[Route("/", rpc, methods=["POST"]), Route("/health", health, methods=["GET"])],
        exception_handlers={404: lambda request, exc: _not_here(request),
                            405: lambda request, exc: _not_here(request)},
        lifespan=lifespan,
    )


def gateway_command(*, listen: str, upstream: str, certfile: Path, keyfile: Path) -> list[str]:
    return [sys.executable, "-m", "contracts.devchain.gateway", "--listen", listen, "--upstream", upstream,
            "--certfile", str(certfile), "--keyfile", str(keyfile)]


def start_chain_gateway(*, upstream: str, port: int, certfile: Path, keyfile: Path, ca_cert: Path, log_path: Path,
                        host: str = "127.0.0.1") -> tuple[Service, str]:
    """Start the terminator on `host`:`port` serving `certfile`/`keyfile` (issued by the consortium CA whose
    certificate is `ca_cert`, naming loopback and `host`). Returns (service, its https URL)."""
    address = f"{reachable_host(host)}:{port}"
    service = start("chain TLS gateway", gateway_command(listen=f"{host}:{port}", upstream=upstream,
                                                         certfile=certfile, keyfile=keyfile),
                    log_path=log_path)
    wait_until(service, lambda: https_answers(address, ca_cert), timeout_s=60, what=f"HTTPS on {address}")
    return service, f"https://{address}"


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:8443", help="host:port the parties dial (HTTPS)")
    parser.add_argument("--upstream", default="http://127.0.0.1:8545", help="the chain node's JSON-RPC (loopback)")
    parser.add_argument("--certfile", type=Path, required=True, help="the terminator's TLS certificate (PEM)")
    parser.add_argument("--keyfile", type=Path, required=True, help="its private key (PEM)")
    args = parser.parse_args(argv)
    setup_logging()
    host, _, port = args.listen.rpartition(":")
    uvicorn.run(create_chain_gateway(args.upstream), host=host.strip("[]"), port=int(port),
                ssl_certfile=str(args.certfile), ssl_keyfile=str(args.keyfile), log_level="warning", log_config=None)


if __name__ == "__main__":
    main()
