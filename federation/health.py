"""`twinledger-probe`: the container health probe of the TwinLedger images (stdlib only, so it starts in a few
milliseconds where `twinledger` would import torch and Flower first).

    twinledger-probe tcp 127.0.0.1:8800
    twinledger-probe http http://127.0.0.1:8800/readyz          # a web app's readiness (federation/web/probes.py)
    twinledger-probe http https://127.0.0.1:9443/health --cafile /etc/twinledger/ca.pem

Exit 0 when the service answers (a TCP connection, or an HTTP status below 400), 1 otherwise, with one line on
stderr. The portal and the consoles listen on the loopback of their container (a TLS proxy faces the network),
so Docker's HEALTHCHECK and Kubernetes' exec probes run this inside the container. Without arguments it probes
$TWINLEDGER_PROBE (default "tcp 127.0.0.1:9101": the SuperNode's ClientApp port). It is a console script of the
package (pyproject.toml), so the images get it with the wheel; both sides' images use it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import ssl
import sys
import urllib.error
import urllib.request


def probe_tcp(address: str, *, timeout_s: float) -> None:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
        pass


def probe_http(url: str, *, timeout_s: float, cafile: str | None) -> None:
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as answer:  # noqa: S310 (fixed URL)
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    if status >= 400:
        raise OSError(f"HTTP {status}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = shlex.split(os.environ.get("TWINLEDGER_PROBE", "tcp 127.0.0.1:9101"))
    parser = argparse.ArgumentParser(prog="twinledger-probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("tcp", "http"))
    parser.add_argument("target", help="HOST:PORT for tcp, a URL for http")
    parser.add_argument("--cafile", help="CA certificate that an https target's certificate must chain to")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    try:
        if args.kind == "tcp":
            probe_tcp(args.target, timeout_s=args.timeout)
        else:
            probe_http(args.target, timeout_s=args.timeout, cafile=args.cafile)
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {args.kind} {args.target}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
