"""Start the long-running parts as real processes: anvil, the Flower SuperLink and the hospitals' SuperNodes.

The process machinery (federation/processes.py) and the SuperLink side (coordinator/processes.py) are
re-exported here for the demo, the benchmarks and the tests; the development chain is the chain side's
(contracts/devchain/), the SuperNode launcher the node's (node/supernode.py). This module adds what only a
whole deployment on one machine needs: the chain's TLS terminator with a certificate from the consortium CA,
and SuperNodes started as processes of this machine.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from contracts.devchain import gateway as devchain_gateway
from coordinator import admission
from coordinator import ca as cax
from coordinator.processes import (  # noqa: F401 - re-exported: the demo, the benchmarks and the tests use them
    FLOWER_APP_DIR,
    INSECURE_LINKS_ENV,
    LOOPBACK,
    VENV_BIN,
    ProcessError,
    Service,
    SuperLink,
    find_link,
    flower_env,
    flwr_run,
    https_answers,
    free_port,
    port_open,
    reachable_host,
    start,
    start_superlink,
    wait_until,
    write_flower_federation,
)
from node import node_keys, supernode

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def issue_chain_certificate(*, ca_dir: Path, tls_dir: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """The chain terminator's server certificate in `tls_dir`, issued by the CA in `ca_dir` (created there if
    missing), naming loopback and `host`. Returns (certificate, key, the CA certificate the parties trust)."""
    authority = cax.load_ca(ca_dir) if (ca_dir / cax.CA_KEY).exists() else cax.create_ca(ca_dir)
    dns, ips = ["localhost"], ["127.0.0.1"]
    if host not in ("", "0.0.0.0", "::", "127.0.0.1", "localhost"):
        try:
            ipaddress.ip_address(host.strip("[]"))
            ips.append(host.strip("[]"))
        except ValueError:
            dns.append(host)
    issued = cax.issue_server_certificate(authority, tls_dir, "chain", dns_names=dns, ip_addresses=ips)
    return issued.cert_path, issued.key_path, authority.cert_path


def start_chain_gateway(*, upstream: str, port: int, ca_dir: Path, tls_dir: Path, log_path: Path,
                        host: str = "127.0.0.1") -> tuple[Service, str, Path]:
    """The chain's TLS terminator (contracts/devchain/gateway.py) on `host`:`port` in front of `upstream`, with
    a certificate from the consortium CA in `ca_dir`. Returns (service, its https URL, the CA certificate)."""
    certfile, keyfile, ca_cert = issue_chain_certificate(ca_dir=ca_dir, tls_dir=tls_dir, host=host)
    service, url = devchain_gateway.start_chain_gateway(upstream=upstream, port=port, certfile=certfile,
                                                        keyfile=keyfile, ca_cert=ca_cert, log_path=log_path, host=host)
    return service, url, ca_cert


def supernode_command(*, warm: bool = True) -> list[str]:
    """Flower's SuperNode; `warm`: with warm ClientApp processes and a short idle poll (node/supernode.py)."""
    return supernode.command(warm=warm)


@contextmanager
def insecure_links() -> Iterator[None]:
    """Within it, `start_superlink` calls that do not say otherwise start the old insecure link (plain HTTP, no
    node authentication, no gateway), and the SuperNodes and `flwr` connections made for them follow.

    For the overhead benchmark only: run the same rounds once as usual (secure) and once inside this, e.g.
    `with processes.insecure_links(): run_demo(options)`. Restores the previous setting on exit.
    """
    previous = os.environ.get(INSECURE_LINKS_ENV)
    os.environ[INSECURE_LINKS_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(INSECURE_LINKS_ENV, None)
        else:
            os.environ[INSECURE_LINKS_ENV] = previous


def admit_nodes(node_homes: list[Path], *, control_address: str, root_certificates: Path) -> dict[str, int]:
    """Register the SuperNode keys of these node homes with the SuperLink at `control_address` (its loopback
    Control API, TLS trusting `root_certificates`); keys are generated in a home that has none.

    Each key is named after its home's directory. Returns that name -> Flower node id. Only adds: keys already
    admitted stay, nothing is removed (`coordinator.admission.sync` makes the list exact from the chain).
    """
    keys = {Path(home).name: node_keys.public_key_pem(node_keys.load_public_key(
        node_keys.ensure_node_keys(Path(home)).public_key)) for home in node_homes}
    admin = admission.ControlAdmin(control_address, root_certificates)
    try:
        return admission.admit(admin, keys)
    finally:
        admin.close()


def start_supernode(
    *, name: str, superlink_port: int, port: int, node_home: Path, flwr_home: Path, log_path: Path,
    warm: bool | None = None, superlink_host: str = "127.0.0.1", root_certificates: Path | None = None,
    control_address: str | None = None, admit: bool = True, insecure: bool | None = None,
) -> Service:
    """A hospital's SuperNode dialling `superlink_host`:`superlink_port` (the SuperLink's hospitals' address).

    By default over TLS trusting `root_certificates` (the consortium CA) and authenticated with the node key
    in `node_home`/keys (generated if absent). With `control_address` (the coordinator's loopback Control API)
    the key is admitted first (`admit_nodes`), unless `admit` is False. For a link `start_superlink` started on
    this machine, the CA, the control address and whether the link is insecure are found from the port.
    `insecure` (development only): plain HTTP and no node key. `warm` None: as TWINLEDGER_WARM_SUPERNODE says
    (default warm, "0": stock Flower); the warm SuperNode also gets a SuperExec secret and the app gate.
    """
    if warm is None:
        warm = os.environ.get("TWINLEDGER_WARM_SUPERNODE", "1") != "0"
    link = find_link(superlink_port) if reachable_host(superlink_host) in LOOPBACK else None
    if insecure is None:
        insecure = link.insecure if link is not None and root_certificates is None else False
    if insecure:
        security = ["--insecure"]
    else:
        root_certificates = root_certificates or (link.root_certificates if link else None)
        if root_certificates is None:
            raise ProcessError(f"no CA certificate for the SuperLink at {superlink_host}:{superlink_port}: give "
                               "root_certificates (the consortium's ca.pem); insecure is for development only")
        control_address = control_address or (link.control_address if link else None)
        if admit and control_address:
            admit_nodes([node_home], control_address=control_address, root_certificates=root_certificates)
        security = supernode.security_options(node_home, root_certificates=root_certificates, warm=warm,
                                              installed_app_dir=FLOWER_APP_DIR)
    service = start(
        f"supernode {name}",
        [*supernode.command(warm=warm), *security, "--superlink", f"{superlink_host}:{superlink_port}",
         "--port", str(port), "--node-config", f'node-home="{node_home}"'],
        log_path=log_path,
        env=supernode.environment(flwr_home),
        cwd=node_home,
    )
    wait_until(service, lambda: port_open(port), timeout_s=60, what=f"port {port}")
    return service
