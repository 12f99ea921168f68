"""A SuperNode's auth key pair: in the formats Flower 1.41 reads, its private half owner-only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from node import node_keys


def test_the_key_pair_is_p256_openssh_with_an_owner_only_private_half(tmp_path: Path) -> None:
    keys = node_keys.generate_node_keys(tmp_path / "keys")
    assert stat.S_IMODE(keys.private_key.stat().st_mode) == 0o600
    assert keys.private_key.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert keys.public_key.read_bytes().startswith(b"ecdsa-sha2-nistp256 ")
    private = serialization.load_ssh_private_key(keys.private_key.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert node_keys.public_key_pem(private.public_key()) == node_keys.public_key_pem(
        node_keys.load_public_key(keys.public_key))


def test_flower_reads_both_halves_as_its_cli_and_supernode_do(tmp_path: Path) -> None:
    from flwr.cli.supernode.register import try_load_public_key

    keys = node_keys.generate_node_keys(tmp_path)
    registered = try_load_public_key(keys.public_key)  # what `flwr supernode register` sends the SuperLink
    private = serialization.load_ssh_private_key(keys.private_key.read_bytes(), None)  # what the SuperNode reads
    assert registered == node_keys.public_key_pem(private.public_key())
    assert node_keys.key_fingerprint(registered) == node_keys.key_fingerprint(private.public_key())
    assert len(node_keys.key_fingerprint(registered)) == 32


def test_an_existing_key_is_never_replaced(tmp_path: Path) -> None:
    node_keys.generate_node_keys(tmp_path)
    with pytest.raises(FileExistsError):
        node_keys.generate_node_keys(tmp_path)


def test_a_key_that_is_not_nist_ec_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ed.pub"
    path.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    with pytest.raises(ValueError, match="EC key"):
        node_keys.load_public_key(path)


def test_the_chain_form_is_the_uncompressed_point_whose_spki_hash_is_the_fingerprint(tmp_path: Path) -> None:
    import hashlib

    key = node_keys.load_public_key(node_keys.generate_node_keys(tmp_path).public_key)
    point = node_keys.chain_node_key(key)
    assert len(point) == 65 and point[0] == 4
    assert hashlib.sha256(node_keys.P256_SPKI_PREFIX + point).digest() == node_keys.key_fingerprint(key)
    rebuilt = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    assert node_keys.public_key_pem(rebuilt) == node_keys.public_key_pem(key)


def test_the_chain_form_refuses_other_curves() -> None:
    with pytest.raises(ValueError, match="P-256"):
        node_keys.chain_node_key(ec.generate_private_key(ec.SECP384R1()).public_key())


@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)
def test_a_hospital_records_its_node_home_key_on_chain_once(chain, tmp_path):
    point = node_keys.record_node_key(chain.hospital, tmp_path / "home")
    assert chain.hospital.node_key_of(chain.hospital.address) == point
    block = chain.hospital.block_number()
    assert node_keys.record_node_key(chain.hospital, tmp_path / "home") == point  # the same key: no transaction
    assert chain.hospital.block_number() == block
