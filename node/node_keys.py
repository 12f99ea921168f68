"""A hospital SuperNode's authentication key pair, in the formats Flower 1.41 reads.

Flower 1.41 SuperNode authentication (checked in the installed flwr source):
- the SuperNode reads `--auth-supernode-private-key PATH`: an **OpenSSH** private key
  (`serialization.load_ssh_private_key`, no passphrase) that must be an EC key
  (flwr/supernode/cli/flower_supernode.py `_try_setup_client_authentication`);
- the SuperLink (`--enable-supernode-auth`) admits only nodes registered through the Control API:
  `flwr supernode register PUBLIC_KEY_FILE SUPERLINK` reads an **OpenSSH** public key on a NIST curve
  (flwr/cli/supernode/register.py `try_load_public_key`) and sends it as SubjectPublicKeyInfo PEM;
- the SuperLink keeps that PEM as the node's `public_key` (its state DB `node` table) and hands it to
  the ServerApp in `grid.get_nodes()` (`NodeInfo.public_key`): `public_key_pem` and `key_fingerprint`
  below give the same bytes, so the coordinator can match a Flower node to the key a hospital registered.

The key here is EC P-256 (any NIST curve passes; P-256 keeps the on-chain record small).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from federation.files import write_secret

# DER prefix of a P-256 SubjectPublicKeyInfo before its 65-byte uncompressed point (RFC 5480): with it a
# contract computes `sha256(P256_SPKI_PREFIX || nodeKey)` = `key_fingerprint` without parsing ASN.1.
P256_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
PRIVATE_KEY = "supernode_auth"
PUBLIC_KEY = "supernode_auth.pub"


@dataclass(frozen=True)
class NodeKeys:
    """Where a SuperNode's key pair lies: give `private_key` to the SuperNode, `public_key` to the operator."""

    private_key: Path
    public_key: Path


NODE_KEY_COMMENT = "twinledger-supernode"  # the public key file's comment


def generate_node_keys(directory: Path, *, comment: str = NODE_KEY_COMMENT) -> NodeKeys:
    """Create an EC P-256 key pair in `directory`: `supernode_auth` (OpenSSH private key, mode 0600) and
    `supernode_auth.pub` (one OpenSSH public-key line, `ecdsa-sha2-nistp256 AAAA... comment`).

    Requires: no key there yet (a node's key is its identity: replacing it means registering anew).
    Returns both paths.
    """
    private_path, public_path = directory / PRIVATE_KEY, directory / PUBLIC_KEY
    if private_path.exists():
        raise FileExistsError(f"{private_path} exists; a SuperNode key is replaced only by rotating it on chain "
                              "(twinledger node rotate-node-key)")
    return _write_key_pair(NodeKeys(private_path, public_path), comment=comment)


def _write_key_pair(keys: NodeKeys, *, comment: str) -> NodeKeys:
    key = ec.generate_private_key(ec.SECP256R1())
    write_secret(keys.private_key, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ))
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    keys.public_key.write_bytes(line + b" " + comment.encode("ascii") + b"\n")
    return keys


def node_keys_of(home: Path) -> NodeKeys:
    """Where a node home keeps its SuperNode key pair: `<home>/keys/supernode_auth` and `.pub`."""
    return NodeKeys(home / "keys" / PRIVATE_KEY, home / "keys" / PUBLIC_KEY)


def ensure_node_keys(home: Path) -> NodeKeys:
    """The node home's SuperNode key pair, generated on first use (`twinledger node init` does it at once)."""
    keys = node_keys_of(home)
    if not keys.private_key.exists():
        generate_node_keys(keys.private_key.parent)
    return keys


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """Read an OpenSSH public key file (or a PEM SubjectPublicKeyInfo file) holding an EC key on a NIST curve.

    Raises ValueError for anything else (Flower refuses those too).
    """
    data = path.read_bytes()
    key = (serialization.load_pem_public_key(data) if data.lstrip().startswith(b"-----BEGIN")
           else serialization.load_ssh_public_key(data))
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
        key.curve, (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
    ):
        raise ValueError(f"{path}: a SuperNode key must be an EC key on P-256, P-384 or P-521")
    return key


def public_key_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    """The key as the SuperLink stores it and `grid.get_nodes()` returns it: SubjectPublicKeyInfo PEM."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_fingerprint(public_key: bytes | ec.EllipticCurvePublicKey) -> bytes:
    """SHA-256 of the key's DER SubjectPublicKeyInfo: 32 bytes, the value to record on chain with the hospital.

    Accepts a key object or the PEM bytes Flower hands out (`NodeInfo.public_key`).
    """
    key = serialization.load_pem_public_key(public_key) if isinstance(public_key, bytes) else public_key
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def chain_node_key(key: ec.EllipticCurvePublicKey) -> bytes:
    """The key as the hospital records it on chain: the 65-byte uncompressed SEC1 point (0x04 || X || Y).

    Requires a P-256 key. `sha256(P256_SPKI_PREFIX + chain_node_key(key)) == key_fingerprint(key)`, and the
    operator rebuilds the PEM to register with `ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)`.
    """
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the chain records P-256 node keys only")
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def record_node_key(ledger, home: Path) -> bytes:
    """Record the node home's SuperNode key on chain as the hospital (`Consortium.setNodeKey` through `ledger`,
    the hospital account's contracts.ledger.Ledger; generates the key pair if absent). The coordinator's node
    follower then admits it, and learns from it which hospital the node is. Returns the 65-byte key recorded."""
    point = chain_node_key(load_public_key(ensure_node_keys(home).public_key))
    if ledger.node_key_of(ledger.address) != point:  # recording the same key again would only cost gas
        ledger.set_node_key(point)
    return point


def pending_node_keys_of(home: Path) -> NodeKeys:
    """Where a rotation keeps the new key pair until the chain has recorded it (`rotate_node_keys`)."""
    keys = node_keys_of(home)
    return NodeKeys(keys.private_key.with_name(PRIVATE_KEY + ".new"), keys.public_key.with_name(PUBLIC_KEY + ".new"))


def rotate_node_keys(ledger, home: Path) -> bytes:
    """Replace the node home's SuperNode key: a new pair is written beside the old one, recorded on chain as the
    hospital (`Consortium.setNodeKey`, which forgets the old key: the coordinator's node follower then unregisters
    it and admits the new one), and only then moved over the old files. Returns the new 65-byte key.

    A rotation cut short resumes: a pending pair the chain already holds is moved into place; one the chain does
    not hold (the transaction failed) is discarded and a fresh pair made. The running SuperNode keeps the old key
    until it restarts (`twinledger node start` reads the files at start)."""
    current, pending = node_keys_of(home), pending_node_keys_of(home)
    if not current.private_key.exists():
        raise ValueError(f"{current.private_key} is missing: a node home without a SuperNode key has "
                                "nothing to rotate (twinledger node record-key creates and records one)")
    point = None
    if pending.private_key.exists() and pending.public_key.exists():
        point = chain_node_key(load_public_key(pending.public_key))
    if point is None or point != ledger.node_key_of(ledger.address):
        _write_key_pair(pending, comment=NODE_KEY_COMMENT)
        point = chain_node_key(load_public_key(pending.public_key))
        ledger.set_node_key(point)
    pending.private_key.replace(current.private_key)
    pending.public_key.replace(current.public_key)
    return point
