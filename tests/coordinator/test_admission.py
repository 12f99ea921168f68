"""Node admission: the link admits exactly the active hospitals' node keys; a node's hospital comes from its key."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coordinator import admission


def _point() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


@dataclass
class Node:
    node_id: int
    public_key: bytes
    status: str = "online"


class FakeLink:
    def __init__(self) -> None:
        self.table: list[Node] = []

    def nodes(self) -> list[Node]:
        return list(self.table)

    def register(self, public_key_pem: bytes, name: str) -> int:
        node = Node(len(self.table) + 100, public_key_pem, "registered")
        self.table.append(node)
        return node.node_id

    def unregister(self, node_id: int) -> None:
        next(node for node in self.table if node.node_id == node_id).status = "unregistered"


def test_sync_registers_every_wanted_key_once() -> None:
    link, wanted = FakeLink(), {"0xA": _point(), "0xB": _point()}
    first = admission.sync(link, wanted)
    assert sorted(first.registered) == ["0xA", "0xB"]
    second = admission.sync(link, wanted)
    assert second.registered == {} and second.unregistered == [] and sorted(second.kept) == ["0xA", "0xB"]


def test_a_suspended_hospital_and_a_self_registered_key_are_unregistered() -> None:
    link, a, b = FakeLink(), _point(), _point()
    ids = admission.sync(link, {"0xA": a, "0xB": b}).registered
    stranger = link.register(admission.pem_from_chain_key(_point()), "anyone")  # via the unauthenticated API
    report = admission.sync(link, {"0xA": a})  # 0xB suspended on chain
    assert sorted(report.unregistered) == sorted([ids["0xB"], stranger])
    assert report.kept == ["0xA"]


def test_a_rotated_key_replaces_the_old_one() -> None:
    link, old, new = FakeLink(), _point(), _point()
    old_id = admission.sync(link, {"0xA": old}).registered["0xA"]
    report = admission.sync(link, {"0xA": new})
    assert report.unregistered == [old_id] and "0xA" in report.registered


def test_two_hospitals_with_one_key_are_refused() -> None:
    point = _point()
    with pytest.raises(ValueError, match="same node key"):
        admission.sync(FakeLink(), {"0xA": point, "0xB": point})


def test_a_node_is_the_hospital_whose_key_it_holds_and_unknown_keys_are_nobody() -> None:
    a, b = _point(), _point()
    nodes = [Node(1, admission.pem_from_chain_key(b)), Node(2, admission.pem_from_chain_key(a)),
             Node(3, admission.pem_from_chain_key(_point()))]
    assert admission.hospitals_of(nodes, {"0xA": a, "0xB": b}) == {1: "0xB", 2: "0xA"}


def test_a_chain_key_that_is_not_a_p256_point_is_refused() -> None:
    with pytest.raises(ValueError):
        admission.pem_from_chain_key(b"\x04" + b"\x01" * 64)
