"""`twinledger node rotate-node-key` (issue 14 item 5): a new SuperNode key in the node home, recorded on chain,
and the old key no longer admitted by the SuperLink the coordinator's node follower keeps equal to the chain."""

from __future__ import annotations

import pytest

from contracts import ledger as lg
from coordinator import admission
from coordinator.node_follower import NodeFollower
from deploy.cli import main
from node import node_keys
from node.admin import init_node
from tests.coordinator.test_admission import FakeLink

pytestmark = pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)  # ledger calls only: one chain


def _admitted(link: FakeLink) -> set[bytes]:
    return {admission.fingerprint(node.public_key) for node in link.nodes() if node.status != admission.UNREGISTERED}


def _fingerprint(home) -> bytes:
    return node_keys.key_fingerprint(node_keys.load_public_key(node_keys.node_keys_of(home).public_key))


@pytest.fixture
def home(chain, tmp_path, monkeypatch):
    """A node home whose hospital account is the fixture's hospital (the in-process chain needs no URL)."""
    settings = init_node(tmp_path / "node", hospital="h1", rpc_url="in-process", deployment_file=None)
    monkeypatch.setattr(lg.Ledger, "from_settings", classmethod(lambda cls, settings, **_: chain.hospital))
    node_keys.record_node_key(chain.hospital, settings.home)
    return settings.home


def test_rotating_records_the_new_key_and_the_follower_drops_the_old(chain, home, capsys):
    link = FakeLink()
    follower = NodeFollower(chain.hospital, link)
    follower.step()
    old = _fingerprint(home)
    old_private = node_keys.node_keys_of(home).private_key.read_bytes()
    assert _admitted(link) == {old}

    assert main(["node", "rotate-node-key", "--home", str(home)]) == 0
    assert "new SuperNode key" in capsys.readouterr().out
    new = _fingerprint(home)
    assert new != old and node_keys.node_keys_of(home).private_key.read_bytes() != old_private
    assert chain.hospital.hospital_by_node_id(new) == chain.hospital.address
    assert chain.hospital.hospital_by_node_id(old) is None
    follower.step()
    assert _admitted(link) == {new}  # the old key's node is unregistered: the SuperLink refuses it
    assert not node_keys.pending_node_keys_of(home).private_key.exists()
    assert (node_keys.node_keys_of(home).private_key.stat().st_mode & 0o777) == 0o600


def test_a_rotation_cut_after_the_chain_recorded_it_is_finished_by_the_next(chain, home, monkeypatch):
    pending = node_keys.pending_node_keys_of(home)

    def disk_full(self, target):
        raise OSError("disk full")

    monkeypatch.setattr(type(pending.private_key), "replace", disk_full)  # after the transaction, before the move
    with pytest.raises(OSError):
        node_keys.rotate_node_keys(chain.hospital, home)
    monkeypatch.undo()
    recorded = chain.hospital.node_key_of(chain.hospital.address)
    assert recorded == node_keys.chain_node_key(node_keys.load_public_key(pending.public_key))
    assert node_keys.rotate_node_keys(chain.hospital, home) == recorded  # no second transaction: the same key
    assert _fingerprint(home) == chain.hospital.node_id_of(chain.hospital.address)


def test_a_refused_rotation_keeps_the_old_key_in_use(chain, home, capsys):
    old = _fingerprint(home)
    chain.operator.set_hospital_suspended(chain.hospital.address, True)
    assert main(["node", "rotate-node-key", "--home", str(home)]) == 2
    assert "is suspended" in capsys.readouterr().err
    assert _fingerprint(home) == old and chain.hospital.hospital_by_node_id(old) == chain.hospital.address
