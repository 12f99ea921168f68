"""The consortium's trust records (issue 11): a hospital's SuperNode key with its hospital record, the app a
study runs, and (issue 12 #4) anchors that are final. Each attack is a test that failed before the fix."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from contracts import ledger as lg
from federation.ids import StudyId
from node import node_keys
from deploy.consortium import funded_key


def _node_key() -> tuple[bytes, bytes]:
    """A fresh SuperNode key as the chain records it (65-byte point) and its fingerprint (Flower's PEM, hashed)."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return node_keys.chain_node_key(key), node_keys.key_fingerprint(node_keys.public_key_pem(key))


def test_a_hospital_records_its_node_key_and_the_contract_derives_the_flower_fingerprint(chain):
    point, fingerprint = _node_key()
    receipt = chain.hospital.set_node_key(point)
    assert chain.hospital.node_key_of(chain.hospital.address) == point
    assert chain.hospital.hospital_by_node_id(fingerprint) == chain.hospital.address
    assert chain.hospital.node_id_of(chain.hospital.address) == fingerprint
    (event,) = chain.hospital.consortium.events.NodeKeySet().process_receipt(receipt)
    assert event["args"]["account"] == chain.hospital.address and event["args"]["nodeId"] == fingerprint
    assert chain.hospital.node_key_of(chain.other_hospital.address) is None
    assert chain.hospital.hospital_by_node_id(b"\x09" * 32) is None


def test_rotating_a_node_key_forgets_the_old_one(chain):
    old, old_id = _node_key()
    new, new_id = _node_key()
    chain.hospital.set_node_key(old)
    chain.hospital.set_node_key(new)
    assert chain.hospital.hospital_by_node_id(old_id) is None
    assert chain.hospital.hospital_by_node_id(new_id) == chain.hospital.address
    chain.hospital.set_node_key(new)  # the same key again changes nothing
    assert chain.hospital.node_key_of(chain.hospital.address) == new


def test_a_hospital_cannot_claim_another_hospitals_node_key(chain):
    point, fingerprint = _node_key()
    chain.hospital.set_node_key(point)
    with pytest.raises(lg.ContractRejected, match="already the node key of another hospital") as caught:
        chain.other_hospital.set_node_key(point)
    assert caught.value.error_name == "NodeKeyInUse"
    assert chain.hospital.hospital_by_node_id(fingerprint) == chain.hospital.address


@pytest.mark.parametrize("bad", [b"", b"\x04" * 64, b"\x02" + b"\x01" * 64, b"\x04" * 66])
def test_a_node_key_that_is_not_an_uncompressed_p256_point_is_refused(chain, bad):
    with pytest.raises(lg.ContractRejected, match="65-byte uncompressed") as caught:
        chain.hospital.set_node_key(bad)
    assert caught.value.error_name == "InvalidNodeKey"


def test_only_a_registered_active_hospital_sets_its_own_node_key(chain):
    point, fingerprint = _node_key()
    stranger = chain.ledger_for(funded_key(chain.w3, ether=10))
    with pytest.raises(lg.ContractRejected, match="not a registered hospital"):
        stranger.set_node_key(point)
    with pytest.raises(lg.ContractRejected, match="not a registered hospital"):
        chain.operator.set_node_key(point)  # the operator cannot put a node of its own in a hospital's place
    chain.operator.set_hospital_suspended(chain.hospital.address, True)
    with pytest.raises(lg.ContractRejected, match="is suspended"):
        chain.hospital.set_node_key(point)
    assert chain.hospital.hospital_by_node_id(fingerprint) is None


def test_node_key_events_tell_a_syncer_about_keys_and_suspensions(chain):
    start = chain.hospital.block_number()
    point, fingerprint = _node_key()
    chain.hospital.set_node_key(point)
    chain.operator.set_hospital_suspended(chain.hospital.address, True)
    chain.operator.set_hospital_suspended(chain.hospital.address, False)
    events = chain.operator.node_key_events(from_block=start)
    assert [(e.kind, e.account) for e in events] == [
        ("node-key", chain.hospital.address), ("suspended", chain.hospital.address),
        ("reinstated", chain.hospital.address)]
    assert events[0].node_key == point and events[0].node_id == fingerprint
    assert all(e.block >= start for e in events)


def test_the_operator_records_a_studys_app_until_a_hospital_accepts(chain):
    digest = bytes.fromhex("ab" * 32)
    study = StudyId.new()
    chain.operator.propose_study(study, purpose="HRESCH", task_id="heart-disease/v1", epsilon_budget=1,
                                 delta_exponent=5, rounds=2, ends_at=int(time.time()) + 86400, app_digest=digest)
    assert chain.hospital.study(study).app_digest == digest
    chain.operator.set_study_app(study, bytes.fromhex("cd" * 32))
    assert chain.hospital.study(study).app_digest == bytes.fromhex("cd" * 32)
    chain.hospital.accept_study(study)
    with pytest.raises(lg.ContractRejected, match="accepted by a hospital") as caught:
        chain.operator.set_study_app(study, digest)  # a hospital accepted terms and code: new code, new study
    assert caught.value.error_name == "StudyAppLocked"
    with pytest.raises(lg.ContractRejected, match="lacks the role"):
        chain.hospital.set_study_app(chain.study_id, digest)
    assert chain.hospital.study(chain.study_id).app_digest == bytes(32)  # none recorded


def test_an_anchor_with_a_zero_model_hash_is_final_too(chain):
    """Issue 12 #4: a zero model hash used to leave the round open to a second anchor naming other hospitals."""
    block = chain.coordinator.block_number()
    chain.coordinator.anchor_round(chain.study_id, 1, pinned_block=block, model_hash=bytes(32),
                                   commitments={chain.hospital.address: b"\x01" * 32})
    with pytest.raises(lg.ContractRejected, match="already anchored"):
        chain.coordinator.anchor_round(chain.study_id, 1, pinned_block=block, model_hash=b"\x05" * 32,
                                       commitments={chain.other_hospital.address: b"\x02" * 32})
    (anchor,) = chain.coordinator.round_anchors(chain.study_id)
    assert anchor.commitments == {chain.hospital.address: b"\x01" * 32}
    assert chain.coordinator.anchor_of(chain.study_id, 1) == bytes(32)  # anchored, with a zero hash
    assert chain.coordinator.anchor_of(chain.study_id, 2) is None


def test_an_anchor_naming_no_hospital_is_final_too(chain):
    block = chain.coordinator.block_number()
    chain.coordinator.anchor_round(chain.study_id, 2, pinned_block=block, model_hash=b"\x05" * 32, commitments={})
    with pytest.raises(lg.ContractRejected, match="already anchored"):
        chain.coordinator.anchor_round(chain.study_id, 2, pinned_block=block, model_hash=b"\x05" * 32,
                                       commitments={chain.hospital.address: b"\x02" * 32})
