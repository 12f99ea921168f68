"""The node follower: the SuperLink's admitted keys follow the chain (coordinator/node_follower.py)."""

from __future__ import annotations

import threading

import pytest

from coordinator import admission
from coordinator.node_follower import NodeFollower
from tests.coordinator.test_admission import FakeLink, _point

pytestmark = pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)


def _admitted(link: FakeLink) -> set[bytes]:
    return {admission.fingerprint(node.public_key) for node in link.nodes() if node.status != admission.UNREGISTERED}


def _key(point: bytes) -> bytes:
    return admission.fingerprint(admission.pem_from_chain_key(point))


def test_a_key_recorded_on_chain_is_admitted_and_a_suspended_hospitals_node_removed(chain) -> None:
    link = FakeLink()
    follower = NodeFollower(chain.hospital, link)
    assert follower.step().registered == {} and _admitted(link) == set()  # nobody recorded a key yet
    a, b = _point(), _point()
    chain.hospital.set_node_key(a)
    chain.other_hospital.set_node_key(b)
    assert sorted(follower.step().registered) == sorted([chain.hospital.address, chain.other_hospital.address])
    assert _admitted(link) == {_key(a), _key(b)}

    chain.operator.set_hospital_suspended(chain.other_hospital.address, True)
    report = follower.step()
    assert len(report.unregistered) == 1 and _admitted(link) == {_key(a)}

    chain.operator.set_hospital_suspended(chain.other_hospital.address, False)  # reinstated: admitted again
    follower.step()
    assert _admitted(link) == {_key(a), _key(b)}


def test_a_rotated_key_replaces_the_old_and_a_hand_registered_key_is_removed(chain) -> None:
    link = FakeLink()
    follower = NodeFollower(chain.hospital, link)
    old, new = _point(), _point()
    chain.hospital.set_node_key(old)
    follower.step()
    link.register(admission.pem_from_chain_key(_point()), "through the Control API")
    chain.hospital.set_node_key(new)
    follower.step()
    assert _admitted(link) == {_key(new)}
    again = follower.step()  # nothing changed on chain: nothing changes on the link
    assert again.registered == {} and again.unregistered == []


def test_the_loop_keeps_going_when_the_link_fails_and_marks_each_sync(chain, tmp_path) -> None:
    class FlakyLink(FakeLink):
        calls = 0

        def nodes(self):
            FlakyLink.calls += 1
            if FlakyLink.calls == 1:
                raise ConnectionError("SuperLink restarting")
            return super().nodes()

    chain.hospital.set_node_key(_point())
    link, stop, synced = FlakyLink(), threading.Event(), tmp_path / "synced"
    runner = threading.Thread(target=NodeFollower(chain.hospital, link).run, args=(stop,),
                              kwargs={"poll_s": 0.05, "synced_file": synced})
    runner.start()
    try:
        for _ in range(200):
            if synced.exists():
                break
            stop.wait(0.05)
    finally:
        stop.set()
        runner.join(timeout=10)
    assert synced.exists() and len(_admitted(link)) == 1
