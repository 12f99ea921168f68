"""Node admission: the SuperLink admits exactly the SuperNode keys of the consortium's active hospitals.

Flower 1.41 with `--enable-supernode-auth` admits the keys registered through its Control API
(`RegisterNode`; `flwr supernode register` is the same call) and shuts a node out at its next request once
its key is unregistered. The Control API has no authentication, so it is reached on the coordinator's loopback
only (see `coordinator.fleet_gateway`), and this module owns its node list: `sync` registers every wanted key
that is missing and unregisters every registered key that is not wanted — hospitals suspended on chain, and
keys anybody else registered. Wanted keys come from the chain (each active hospital's node key, see
/work/plan/flower-trust.md); this module takes them as a mapping so it does not depend on the ledger client.

`hospitals_of(grid.get_nodes(), wanted)` then tells the coordinator which hospital each Flower node is, from the
key the node authenticated with, never from what a node says about itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

UNREGISTERED = "unregistered"


class NodeRecord(Protocol):
    """What Flower's `NodeInfo` (flwr.proto.node_pb2) offers: from `ListNodes` or the ServerApp's `grid.get_nodes()`."""

    node_id: int
    public_key: bytes
    status: str


def pem_from_chain_key(point: bytes) -> bytes:
    """The SubjectPublicKeyInfo PEM Flower registers, from the 65-byte P-256 point a hospital records on chain.

    Raises ValueError when `point` is not a valid P-256 point.
    """
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def pem_from_key_file(path: Path) -> bytes:
    """The SubjectPublicKeyInfo PEM of a SuperNode public key file (OpenSSH line, as `twinledger node init`
    writes it, or PEM). Raises ValueError unless it is an EC key on a NIST curve (Flower refuses others)."""
    data = path.read_bytes()
    key = (serialization.load_pem_public_key(data) if data.lstrip().startswith(b"-----BEGIN")
           else serialization.load_ssh_public_key(data))
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)):
        raise ValueError(f"{path}: a SuperNode key must be an EC key on P-256, P-384 or P-521")
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def chain_key_from_pem(pem: bytes) -> bytes:
    """The 65-byte P-256 point a hospital records on chain, from a key's PEM. Raises ValueError for other curves."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the chain records P-256 node keys only")
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def fingerprint(pem: bytes) -> bytes:
    """SHA-256 of the key's DER SubjectPublicKeyInfo (the same value as `node.node_keys.key_fingerprint`)."""
    key = serialization.load_pem_public_key(pem)
    return hashlib.sha256(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).digest()


class LinkAdmin(Protocol):
    """The three Control API calls admission needs (see `ControlAdmin` for the real one)."""

    def nodes(self) -> list[NodeRecord]: ...
    def register(self, public_key_pem: bytes, name: str) -> int: ...
    def unregister(self, node_id: int) -> None: ...


class ControlAdmin:
    """`LinkAdmin` over Flower's Control API client, trusting the consortium CA (reach it on loopback only)."""

    def __init__(self, address: str, ca_cert: Path) -> None:
        """Requires: `address` "host:port" of the SuperLink (TLS), `ca_cert` the PEM CA its certificate chains to."""
        from flwr.supercore.control import ControlHttpClient
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

        self._client = ControlHttpClient.from_server_address(
            server_address=address, insecure=False, root_certificates=ca_cert.read_bytes(),
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
        )

    def nodes(self) -> list[NodeRecord]:
        """Every node the SuperLink knows, unregistered ones included."""
        from flwr.proto.control_pb2 import ListNodesRequest  # pylint: disable=E0611

        return list(self._client.ListNodes(ListNodesRequest()).nodes_info)

    def register(self, public_key_pem: bytes, name: str) -> int:
        """Register a key (PEM) under `name`; returns the node id Flower assigned."""
        from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=E0611

        return int(self._client.RegisterNode(RegisterNodeRequest(public_key=public_key_pem, name=name)).node_id)

    def unregister(self, node_id: int) -> None:
        """Unregister a node: its SuperNode is refused (401) at its next request and stops."""
        from flwr.proto.control_pb2 import UnregisterNodeRequest  # pylint: disable=E0611

        self._client.UnregisterNode(UnregisterNodeRequest(node_id=node_id))

    def close(self) -> None:
        """Close the HTTP connection."""
        self._client.close()


@dataclass
class SyncReport:
    """What `sync` changed: accounts registered (with node ids), node ids unregistered, accounts already in."""

    registered: dict[str, int] = field(default_factory=dict)
    unregistered: list[int] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def sync(admin: LinkAdmin, wanted: Mapping[str, bytes]) -> SyncReport:
    """Make the SuperLink's admitted keys exactly `wanted` (hospital account -> 65-byte P-256 node key).

    Requires: `wanted` holds only active hospitals (suspended ones left out) with distinct keys.
    Registers the missing ones (named by account), unregisters every live node whose key is not wanted.
    Returns what changed. Idempotent: a second call with the same mapping changes nothing.
    """
    want = {fingerprint(pem_from_chain_key(point)): account for account, point in wanted.items()}
    if len(want) != len(wanted):
        raise ValueError("two hospitals hold the same node key")
    report = SyncReport()
    live = [node for node in admin.nodes() if node.status != UNREGISTERED]
    present: set[bytes] = set()
    for node in live:
        key = fingerprint(node.public_key)
        if key in want:
            present.add(key)
            report.kept.append(want[key])
        else:
            admin.unregister(node.node_id)
            report.unregistered.append(node.node_id)
    for account, point in wanted.items():
        pem = pem_from_chain_key(point)
        if fingerprint(pem) not in present:
            report.registered[account] = admin.register(pem, account)
    return report


def admit(admin: LinkAdmin, keys: Mapping[str, bytes]) -> dict[str, int]:
    """Register each key (name -> SubjectPublicKeyInfo PEM) the SuperLink does not hold yet; unregister nothing.

    For admitting nodes one by one (a development federation, `twinledger coordinator nodes admit`); the
    chain-driven `sync` is what keeps the list exact. Returns name -> node id of every key (new or present).
    """
    live = {fingerprint(node.public_key): node.node_id for node in admin.nodes() if node.status != UNREGISTERED}
    admitted = {}
    for name, pem in keys.items():
        key = fingerprint(pem)
        admitted[name] = live[key] if key in live else admin.register(pem, name)
        live[key] = admitted[name]
    return admitted


def hospitals_of(nodes: Iterable[NodeRecord], wanted: Mapping[str, bytes]) -> dict[int, str]:
    """Which hospital account each node is, from the key it authenticated with (`grid.get_nodes()`).

    Nodes whose key belongs to no wanted hospital are left out: send them nothing, count nothing of theirs.
    """
    by_key = {fingerprint(pem_from_chain_key(point)): account for account, point in wanted.items()}
    return {node.node_id: by_key[key] for node in nodes if (key := fingerprint(node.public_key)) in by_key}
