"""The coordinator's processes: Flower's SuperLink and `flwr run` / `flwr stop`, started as subprocesses.

The SuperLink starts behind the trust boundary by default (`start_superlink`): TLS from the consortium CA
(`coordinator/ca.py`; a development CA in its state directory when none is given), `--enable-supernode-auth`,
bound to 127.0.0.1, and the Fleet-only gateway (`coordinator/fleet_gateway.py`) on the address hospitals dial,
because flwr 1.41 serves its unauthenticated Control API on the Fleet port. `insecure=True` (development and the
overhead benchmark's comparison only) is the old plain-HTTP SuperLink.

The helpers the `twinledger coordinator` commands, the operator console and `deploy` (the demo, the
benchmarks) use to talk to the SuperLink with Flower's `flwr` CLI. Starting a process that logs to a file and
waiting until it answers is federation/processes.py's (re-exported here), shared with the development chain.

The Flower app `flwr run` submits is `FLOWER_APP_DIR` (coordinator/flower_app/pyproject.toml, package data):
a FAB of that pyproject.toml alone. Flower's `load_app` puts the unpacked FAB first on sys.path and imports
`coordinator.server_app` / `node.client_app` by name, so with no Python files in the FAB both come from the
packages installed beside Flower (flwr 1.41: flwr/supercore/object_ref.py, flwr/cli/build.py).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from coordinator import ca as cax
from coordinator.link_records import LinkRecord, find_link, forget_link, remember_link  # noqa: F401 - used by callers too
from coordinator.node_follower import follower_command
from coordinator.recovery import end_abandoned_runs
from federation.processes import (  # noqa: F401 - re-exported: the coordinator's importers use them from here
    ProcessError,
    Service,
    free_port,
    https_answers,
    port_open,
    reachable_host,
    start,
    wait_until,
)

log = logging.getLogger("twinledger.coordinator")
FLOWER_APP_DIR = Path(__file__).resolve().parent / "flower_app"
VENV_BIN = Path(sys.executable).parent  # flwr, flower-superlink and flower-supernode sit beside this Python
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def superlink_address(text: str) -> tuple[str, int]:
    """HOST:PORT of a SuperLink as given on a command line."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--superlink must be HOST:PORT, got {text!r}")
    return host, int(port)


def flower_env(flwr_home: Path, *, bin_dir: Path = VENV_BIN) -> dict[str, str]:
    """This process's environment for a Flower process: its FLWR_HOME, no telemetry, no update check."""
    env = dict(os.environ)
    env.update({"FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                "PYTHONUNBUFFERED": "1"})
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


# --- The link's certificates -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LinkTLS:
    """The files a TLS SuperLink and its Fleet gateway need: the CA certificate every client trusts, and a
    server certificate and key for each (issued by the consortium CA)."""

    ca_cert: Path
    superlink_cert: Path
    superlink_key: Path
    gateway_cert: Path
    gateway_key: Path


def link_tls(state_dir: Path, *, ca_dir: Path | None = None, public_host: str = "127.0.0.1") -> LinkTLS:
    """Server certificates for the SuperLink and its gateway in `state_dir`/tls, issued by the CA in `ca_dir`.

    Without `ca_dir`: a development CA in `state_dir`/ca, created on first use (the operator's own CA,
    `twinledger coordinator ca init`, is the production one). Certificates are issued when missing or due for
    renewal (`ca.needs_renewal`), so a restart rotates them. The SuperLink's names its loopback address (its
    only listener; Flower's own SuperExec dials it there); the gateway's names loopback, this host's name and
    `public_host` when that is an address or name other than the wildcard.
    """
    out = state_dir / "tls"
    files = LinkTLS(Path(), out / "superlink.pem", out / "superlink.key", out / "fleet-gateway.pem",
                    out / "fleet-gateway.key")
    if ca_dir is not None and not (ca_dir / cax.CA_KEY).exists() and (ca_dir / cax.CA_CERT).exists():
        # The CA key stays on the operator's machine: the certificates were issued there and copied here.
        for cert in (files.superlink_cert, files.gateway_cert):
            if not cert.exists() or cax.needs_renewal(cert, within_days=1):
                raise ProcessError(f"{cert} is missing or expires within a day, and {ca_dir} holds no CA key to "
                                   f"issue it: twinledger coordinator ca issue-server {cert.stem} --out {out} ...")
        return replace(files, ca_cert=ca_dir / cax.CA_CERT)
    ca_dir = ca_dir or state_dir / "ca"
    authority = cax.load_ca(ca_dir) if (ca_dir / cax.CA_KEY).exists() else cax.create_ca(ca_dir)
    dns, ips = ["localhost", socket.gethostname()], ["127.0.0.1"]
    if public_host not in ("", "0.0.0.0", "::", "127.0.0.1", "localhost"):
        try:
            ipaddress.ip_address(public_host.strip("[]"))
            ips.append(public_host.strip("[]"))
        except ValueError:
            dns.append(public_host)
    for service, names, addresses in (("superlink", ["localhost"], ["127.0.0.1"]), ("fleet-gateway", dns, ips)):
        cert = out / f"{service}.pem"
        if not cert.exists() or cax.needs_renewal(cert) or not _names(cert) >= {*names, *addresses}:
            cax.issue_server_certificate(authority, out, service, dns_names=names, ip_addresses=addresses)
    return replace(files, ca_cert=authority.cert_path)


def _names(cert_path: Path) -> set[str]:
    """The DNS names and IP addresses a certificate's SANs list (text)."""
    from cryptography import x509

    sans = x509.load_pem_x509_certificate(cert_path.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return {*sans.get_values_for_type(x509.DNSName), *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))}


def superlink_command(*, database: Path, host: str, port: int, tls: LinkTLS | None = None,
                      health_address: str | None = None) -> list[str]:
    """`flower-superlink` serving its APIs on `host`:`port`: with TLS and SuperNode authentication when `tls`
    is given (production), plain HTTP open to any node otherwise (development only); `health_address`: Flower's
    gRPC health service there (grpc.health.v1, no TLS: a loopback address, for a gRPC probe)."""
    # Without --disable-runtime-dependency-installation, flwr 1.41 runs `uv sync` for every run and installs the
    # app's dependencies (a CUDA torch among them) into a fresh environment: the apps use this environment instead.
    security = ["--insecure"] if tls is None else [
        "--ssl-certfile", str(tls.superlink_cert), "--ssl-keyfile", str(tls.superlink_key),
        "--ssl-ca-certfile", str(tls.ca_cert), "--enable-supernode-auth",
    ]
    return [str(VENV_BIN / "flower-superlink"), *security, "--disable-runtime-dependency-installation",
            "--database", str(database), "--host", host, "--port", str(port),
            *(["--health-server-address", health_address] if health_address else [])]


def gateway_command(*, listen: str, upstream: str, tls: LinkTLS) -> list[str]:
    """The Fleet-only gateway (coordinator/fleet_gateway.py) hospitals dial instead of the SuperLink."""
    return [sys.executable, "-m", "coordinator.fleet_gateway", "--listen", listen, "--upstream", upstream,
            "--certfile", str(tls.gateway_cert), "--keyfile", str(tls.gateway_key), "--upstream-ca", str(tls.ca_cert)]


@dataclass
class SuperLink(Service):
    """A running SuperLink: `fleet_address` is what hospitals dial (the gateway; the SuperLink itself when
    insecure), `control_address` where the coordinator's own processes reach its Control and Runtime APIs
    (loopback). Stopping it stops the gateway too."""

    fleet_address: str = ""
    control_address: str = ""
    root_certificates: Path | None = None  # the CA certificate clients trust; None: plain HTTP (development)
    gateway: Service | None = None
    follower: Service | None = None  # coordinator/node_follower.py: the allowlist follows the chain

    @property
    def helpers_alive(self) -> bool:
        return all(part is None or part.alive() for part in (self.gateway, self.follower))

    @property
    def insecure(self) -> bool:
        return self.root_certificates is None

    def stop(self, timeout_s: float = 10.0) -> None:
        for part in (self.follower, self.gateway):
            if part is not None:
                part.stop(timeout_s)
        super().stop(timeout_s)
        forget_link(self)


INSECURE_LINKS_ENV = "TWINLEDGER_BENCH_INSECURE_LINKS"  # "1": start_superlink(insecure=None) starts insecure links


def start_superlink(*, port: int, state_dir: Path, flwr_home: Path, host: str = "127.0.0.1",
                    ca_dir: Path | None = None, control_port: int | None = None,
                    insecure: bool | None = None, follow_home: Path | None = None,
                    health_address: str | None = None) -> SuperLink:
    """Start the consortium's SuperLink; hospitals' SuperNodes dial `host`:`port`.

    By default (production path): the SuperLink itself listens on 127.0.0.1:`control_port` (a free port when
    None) with TLS and `--enable-supernode-auth`, and `host`:`port` is the Fleet-only TLS gateway in front of
    it, so whoever reaches the hospitals' address reaches neither run submission nor node registration.
    Certificates come from the consortium CA in `ca_dir`, else from a development CA created in
    `state_dir`/ca (see `link_tls`). Ready when both answer `/health` over HTTPS trusting that CA.
    `insecure` (development only, e.g. the benchmark's insecure side): the old plain-HTTP SuperLink on
    `host`:`port`, any node admitted, no gateway. None: False unless $TWINLEDGER_BENCH_INSECURE_LINKS is "1"
    (set only by `deploy.processes.insecure_links()`, the benchmark's way to time the same rounds both ways).
    The link is recorded for this machine's other processes (`find_link`), so `write_flower_federation` and
    `start_supernode` given this port find its control address and CA.
    `follow_home` (a coordinator home, for its chain settings and runs): runs an earlier SuperLink's ServerApp
    left at "running" are ended first (coordinator/recovery.py); the admitted node keys follow the chain
    (coordinator/node_follower.py, a third process, polling every 2 s): ready once it synced the first time.
    Without it, keys are admitted by hand (`twinledger coordinator nodes admit|sync`).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    if follow_home is not None:
        # No ServerApp of an earlier SuperLink outlives it: a run it left at "running" ends now, saying why.
        for name in end_abandoned_runs(Path(follow_home) / "runs"):  # CoordinatorSettings.runs_dir
            log.warning("run %s ended: its ServerApp stopped with the SuperLink before (see its report)", name)
    env = flower_env(flwr_home)
    database = state_dir / "state.db"
    if insecure is None:
        insecure = os.environ.get(INSECURE_LINKS_ENV) == "1"
    if insecure:
        service = start("superlink", superlink_command(database=database, host=host, port=port,
                                                       health_address=health_address),
                        log_path=state_dir / "superlink.log", env=env, cwd=state_dir)
        address = f"{reachable_host(host)}:{port}"
        wait_until(service, lambda: port_open(port, reachable_host(host).strip("[]")), timeout_s=60,
                   what=f"port {port}")
        link = SuperLink(service.name, service.process, service.log_path, fleet_address=address,
                         control_address=address)
        remember_link(link)
        return link
    tls = link_tls(state_dir, ca_dir=ca_dir, public_host=host)
    control_port = control_port or free_port()
    control = f"127.0.0.1:{control_port}"
    service = start("superlink", superlink_command(database=database, host="127.0.0.1", port=control_port, tls=tls,
                                                   health_address=health_address),
                    log_path=state_dir / "superlink.log", env=env, cwd=state_dir)
    link = SuperLink(service.name, service.process, service.log_path, fleet_address=f"{reachable_host(host)}:{port}",
                     control_address=control, root_certificates=tls.ca_cert)
    try:
        wait_until(service, lambda: https_answers(control, tls.ca_cert), timeout_s=60, what=f"HTTPS on {control}")
        link.gateway = start("fleet gateway", gateway_command(listen=f"{host}:{port}", upstream=control, tls=tls),
                             log_path=state_dir / "fleet-gateway.log", env=env, cwd=state_dir)
        wait_until(link.gateway, lambda: https_answers(link.fleet_address, tls.ca_cert), timeout_s=60,
                   what=f"HTTPS on {link.fleet_address}")
        if follow_home is not None:
            synced = state_dir / "node-follower.synced"
            synced.unlink(missing_ok=True)
            link.follower = start("node follower", follower_command(
                home=Path(follow_home).resolve(), control=control, ca_cert=tls.ca_cert, synced_file=synced),
                log_path=state_dir / "node-follower.log", env=env, cwd=state_dir)
            wait_until(link.follower, synced.exists, timeout_s=60, what="the node keys' first sync from the chain")
    except ProcessError:
        link.stop()
        raise
    remember_link(link)
    return link


def write_flower_federation(flwr_home: Path, *, name: str, superlink_port: int, host: str = "127.0.0.1",
                            root_certificates: Path | None = None, insecure: bool | None = None) -> None:
    """The `flwr` CLI's connection to a SuperLink, in $FLWR_HOME/config.toml: TLS trusting `root_certificates`.

    The operator's `flwr` needs the Control API, which only the SuperLink's loopback address serves (never the
    hospitals' gateway). Given the port of a SuperLink `start_superlink` started on this machine (its
    hospitals' port or its control port), the connection goes to that link's control address with its CA
    (or plain HTTP if that link is insecure). Otherwise `host`:`superlink_port` is the SuperLink's Control API
    and `root_certificates` (the consortium CA certificate) is required, unless `insecure` (development only).
    """
    address = f"{host}:{superlink_port}"
    link = find_link(superlink_port) if reachable_host(host) in LOOPBACK else None
    if link is not None and root_certificates is None and insecure is None:
        address, root_certificates, insecure = link.control_address, link.root_certificates, link.insecure
    if insecure:
        security = "insecure = true"
    elif root_certificates is None:
        raise ProcessError(f"no CA certificate for the SuperLink at {address}: give the consortium CA's ca.pem "
                           "(root_certificates / --root-certificates); insecure is for development only")
    else:
        security = f'root-certificates = "{Path(root_certificates).resolve()}"'
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(f'[superlink.{name}]\naddress = "{address}"\n{security}\n')


def run_config_overrides(config: dict) -> str:
    """`flwr run --run-config` text: numbers as they are, everything else quoted."""
    return " ".join(f"{k}={v}" if isinstance(v, (int, float)) else f'{k}="{v}"' for k, v in config.items())


def flwr_run_command(*, federation: str, run_config: dict, flwr: Path = VENV_BIN / "flwr",
                     app_dir: Path = FLOWER_APP_DIR) -> list[str]:
    # Through federation.logs: the log keeps flwr's lines without their colour codes and without per-poll lines.
    return [sys.executable, "-m", "federation.logs", "--", str(flwr), "run", str(app_dir), federation, "--stream",
            "--run-config", run_config_overrides(run_config)]


def flwr_run(*, federation: str, run_config: dict, flwr_home: Path, log_path: Path,
             app_dir: Path = FLOWER_APP_DIR) -> Service:
    """Submit the Flower app to the SuperLink and stream the run's logs to `log_path`."""
    return start("flwr run", flwr_run_command(federation=federation, run_config=run_config, app_dir=app_dir),
                 log_path=log_path, env=flower_env(flwr_home), cwd=app_dir)
