"""The consent contracts and their Python client, on the in-process chain."""

from __future__ import annotations

import secrets
import time

import pytest
from eth_account import Account

from contracts import ledger as lg

FAR = int(time.time()) + 365 * 24 * 3600


def _patients(n):
    keys = ["0x" + secrets.token_hex(32) for _ in range(n)]
    return [lg.new_pseudonym() for _ in range(n)], keys


def _signed_grants(chain, pseudonyms, keys, *, nonce=0):
    return [
        lg.sign_grant(
            key, chain.deployment, pseudonym=p, study_id=chain.study_id, valid_from=0, valid_until=FAR, nonce=nonce, deadline=FAR
        )
        for p, key in zip(pseudonyms, keys)
    ]


def test_study_terms_round_trip(chain):
    terms = chain.hospital.study(chain.study_id)
    assert terms.purpose == "HRESCH"
    assert terms.task_id == "heart-disease/v1"
    assert terms.epsilon_budget == 3.0
    assert terms.delta == pytest.approx(1e-5)
    assert terms.rounds == 5
    assert chain.hospital.is_study_live_for(chain.study_id, chain.hospital.address)
    assert not chain.hospital.is_study_live_for(chain.study_id, chain.other_hospital.address)


def test_unknown_study_reads_in_domain_words(chain):
    with pytest.raises(lg.ContractRejected, match="not known to the consortium"):
        chain.hospital.study(b"\x09" * 32)


def test_relayed_grants_and_batch_agree_with_single_reads(chain):
    pseudonyms, keys = _patients(7)
    chain.hospital.enrol(pseudonyms, [Account.from_key(k).address for k in keys])
    chain.hospital.relay_grants(_signed_grants(chain, pseudonyms[:5], keys[:5]))
    block = chain.hospital.block_number()
    batch = chain.hospital.consents(chain.study_id, pseudonyms, block=block)
    single = [chain.hospital.has_consent(p, chain.study_id, block=block) for p in pseudonyms]
    assert batch == single == [True] * 5 + [False] * 2


def test_revocation_holds_from_its_block_and_history_stays(chain):
    pseudonyms, keys = _patients(2)
    chain.hospital.enrol(pseudonyms, [Account.from_key(k).address for k in keys])
    chain.hospital.relay_grants(_signed_grants(chain, pseudonyms, keys))
    before = chain.hospital.block_number()
    revoke = lg.sign_revoke(keys[0], chain.deployment, pseudonym=pseudonyms[0], study_id=chain.study_id, nonce=1, deadline=FAR)
    receipt = chain.hospital.relay_revoke(revoke)
    assert chain.hospital.consents(chain.study_id, pseudonyms, block=before) == [True, True]
    assert chain.hospital.consents(chain.study_id, pseudonyms, block=receipt["blockNumber"]) == [False, True]
    changes = chain.hospital.consent_changes(chain.study_id)
    assert [c.granted for c in changes] == [True, True, False]
    assert changes[-1].block == receipt["blockNumber"]


def test_replayed_signature_is_rejected(chain):
    pseudonyms, keys = _patients(1)
    chain.hospital.enrol(pseudonyms, [Account.from_key(keys[0]).address])
    grant = _signed_grants(chain, pseudonyms, keys)
    chain.hospital.relay_grants(grant)
    with pytest.raises(lg.ContractRejected, match="replayed or out of order"):
        chain.hospital.relay_grants(grant)


def test_only_the_patients_key_can_sign(chain):
    pseudonyms, keys = _patients(1)
    chain.hospital.enrol(pseudonyms, [Account.from_key(keys[0]).address])
    forged = _signed_grants(chain, pseudonyms, ["0x" + secrets.token_hex(32)])
    with pytest.raises(lg.ContractRejected, match="not the patient's"):
        chain.hospital.relay_grants(forged)
    assert not chain.hospital.has_consent(pseudonyms[0], chain.study_id)


def test_signature_for_another_contract_is_rejected(chain):
    pseudonyms, keys = _patients(1)
    chain.hospital.enrol(pseudonyms, [Account.from_key(keys[0]).address])
    elsewhere = lg.Deployment(**{**chain.deployment.__dict__, "consent_registry": "0x" + "11" * 20})
    grant = lg.sign_grant(
        keys[0], elsewhere, pseudonym=pseudonyms[0], study_id=chain.study_id, valid_from=0, valid_until=FAR, nonce=0, deadline=FAR
    )
    with pytest.raises(lg.ContractRejected, match="not the patient's"):
        chain.hospital.relay_grants([grant])


def test_hospital_cannot_grant_for_a_patient(chain):
    pseudonyms, keys = _patients(1)
    chain.hospital.enrol(pseudonyms, [Account.from_key(keys[0]).address])
    with pytest.raises(lg.ContractRejected, match="only the patient's own key"):
        chain.hospital.grant(pseudonyms[0], chain.study_id, valid_from=0, valid_until=FAR)


def test_unregistered_account_cannot_enrol(chain, artifacts):
    stranger = chain.ledger_for(__import__("tests.conftest", fromlist=["x"]).fresh_funded_key(chain.w3))
    with pytest.raises(lg.ContractRejected, match="not an active hospital"):
        stranger.enrol([lg.new_pseudonym()], [stranger.address])


def test_round_anchor_is_recorded_and_read_back(chain):
    block = chain.coordinator.block_number()
    commitment = lg.pseudonym_commitment([b"\x02" * 32, b"\x01" * 32])
    assert commitment == lg.pseudonym_commitment([b"\x01" * 32, b"\x02" * 32])
    chain.coordinator.anchor_round(
        chain.study_id, 1, pinned_block=block, model_hash=b"\x05" * 32, commitments={chain.hospital.address: commitment}
    )
    (anchor,) = chain.coordinator.round_anchors(chain.study_id)
    assert anchor.round == 1 and anchor.pinned_block == block
    assert anchor.commitments == {chain.hospital.address: commitment}
    with pytest.raises(lg.ContractRejected, match="already anchored"):
        chain.coordinator.anchor_round(
            chain.study_id, 1, pinned_block=block, model_hash=b"\x05" * 32, commitments={}
        )


def test_only_the_coordinator_anchors(chain):
    with pytest.raises(lg.ContractRejected, match="lacks the role"):
        chain.hospital.anchor_round(chain.study_id, 1, pinned_block=1, model_hash=b"\x05" * 32, commitments={})


def test_unreachable_chain_is_a_clear_error():
    with pytest.raises(lg.ChainUnavailable, match="cannot be reached"):
        lg.connect("http://127.0.0.1:9", timeout_s=1)
