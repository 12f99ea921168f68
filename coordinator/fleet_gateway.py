"""The hospitals' only door to the SuperLink: a TLS gateway that forwards Flower's Fleet API and nothing else.

    python -m coordinator.fleet_gateway --listen 0.0.0.0:9443 --upstream 127.0.0.1:8000 \\
        --certfile tls/fleet-gateway.pem --keyfile tls/fleet-gateway.key --upstream-ca ca/ca.pem

Why: flwr 1.41 serves its Fleet API (SuperNodes), Control API (run submission, node registration) and
Runtime API (the ServerApp's) on one port, and the Control API has no authentication without Flower's
licensed build. Whoever reaches that port can submit a run (code execution at every hospital) or register a
node key of its own. So the SuperLink listens on the coordinator's loopback only (TLS and
`--enable-supernode-auth` on), the operator's `flwr` and the ServerApp reach it there, and hospitals reach
this gateway instead. It answers `POST /v1/fleet/<call>` (the twelve Fleet calls a SuperNode makes) and
`GET /health` by forwarding them unchanged — body bytes and the node-authentication headers
(`flwr-public-key`, `flwr-signature`, `flwr-timestamp`) — to the SuperLink over TLS (verified against the
consortium CA), and 404 to everything else (`/v1/control/*`, `/v1/runtime/*`, `/docs`, `/openapi.json`).
The SuperLink still authenticates every node: the gateway grants nothing, it only hides what nodes must not see.
"""

from __future__ import annotations

import argparse
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from federation.logs import setup_logging

# The Fleet calls of flwr 1.41 (flwr/superlink/routers/fleet/router.py), all POST.
FLEET_CALLS = frozenset({
    "register-node", "activate-node", "deactivate-node", "unregister-node", "send-node-heartbeat",
    "pull-messages", "push-messages", "get-run", "get-fab", "push-object", "pull-object",
    "confirm-message-received",
})
# Hop-by-hop and per-connection headers: not forwarded (all others are, e.g. the node-auth and version ones).
DROPPED_REQUEST_HEADERS = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding",
                                     "te", "upgrade", "proxy-authorization", "proxy-connection", "forwarded",
                                     "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"})
DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                                      "content-encoding", "server", "date"})
_CALL = re.compile(r"^[a-z-]{1,40}$")
MAX_BODY_BYTES = 512 * 1024 * 1024  # flwr's GRPC_MAX_MESSAGE_LENGTH: the largest message a node may send


def _not_here(_: Request) -> Response:
    return JSONResponse({"error": "not found"}, status_code=404)


def create_gateway(upstream: str, *, upstream_ca: Path, timeout_s: float = 60.0,
                   transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """Build the gateway app forwarding Fleet calls to the SuperLink at `upstream` ("host:port", TLS).

    Requires: `upstream_ca` is the PEM CA certificate that signed the SuperLink's certificate, whose SANs name
    the upstream host. Returns a Starlette app (serve it with uvicorn and the gateway's own certificate).
    Unknown paths and methods answer 404 without reaching the SuperLink. `transport` replaces the network
    (tests); by default the gateway dials `upstream` over TLS.
    """
    verify = ssl.create_default_context(cafile=str(upstream_ca))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(base_url=f"https://{upstream}", verify=verify, timeout=timeout_s,
                                     transport=transport) as client:
            app.state.client = client
            yield

    async def forward(request: Request, path: str) -> Response:
        client: httpx.AsyncClient = request.app.state.client
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request too large"}, status_code=413)
        headers = [(name, value) for name, value in request.headers.items() if name not in DROPPED_REQUEST_HEADERS]
        try:
            answer = await client.request(request.method, path, content=body, headers=headers)
        except httpx.HTTPError:
            return JSONResponse({"error": "SuperLink unreachable"}, status_code=502)
        kept = {name: value for name, value in answer.headers.items() if name.lower() not in DROPPED_RESPONSE_HEADERS}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    async def fleet(request: Request) -> Response:
        call = request.path_params["call"]
        if call not in FLEET_CALLS or not _CALL.match(call):
            return _not_here(request)
        return await forward(request, f"/v1/fleet/{call}")

    async def health(request: Request) -> Response:
        return await forward(request, "/health")

    return Starlette(
        routes=[Route("/v1/fleet/{call}", fleet, methods=["POST"]), Route("/health", health, methods=["GET"])],
        exception_handlers={404: lambda request, exc: _not_here(request),
                            405: lambda request, exc: _not_here(request)},
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    """Serve the gateway with TLS (see the module docstring for the command line)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="0.0.0.0:9443", help="host:port the hospitals' SuperNodes dial")
    parser.add_argument("--upstream", default="127.0.0.1:8000", help="the SuperLink (on loopback), host:port")
    parser.add_argument("--certfile", type=Path, required=True, help="the gateway's TLS certificate (PEM)")
    parser.add_argument("--keyfile", type=Path, required=True, help="its private key (PEM)")
    parser.add_argument("--upstream-ca", type=Path, required=True, help="CA certificate the SuperLink's chains to")
    args = parser.parse_args(argv)
    setup_logging()  # the access log without the SuperNodes' polls (federation/logs.py)
    host, _, port = args.listen.rpartition(":")
    uvicorn.run(create_gateway(args.upstream, upstream_ca=args.upstream_ca), host=host.strip("[]"), port=int(port),
                ssl_certfile=str(args.certfile), ssl_keyfile=str(args.keyfile), log_level="info",
                access_log=True, log_config=None)


if __name__ == "__main__":
    main()
