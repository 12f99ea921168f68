"""Attacks on a hospital node's consent gate from issue 12: a patient hijacked by another hospital's
enrolment (item 1) and rounds or pinned blocks outside the study (item 6). Each must use no patient data."""

from __future__ import annotations

import secrets

import pytest
from eth_account import Account

from contracts import ledger as lg
from federation import protocol
from federation.ids import Pseudonym
from node.consent_gate import ConsentGate, Refusal
from node.vault import Vault
from tests.node.hospital import FAR, fresh_state, hospital  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


def _repseudonymise(hospital, number: str, *, consent_key: str | None) -> Pseudonym:
    """Give patient `number` a fresh pseudonym in the node's store (its record sealed to it), as if the node
    had imported it so and believed it enrolled with `consent_key`; nothing of it is on chain yet."""
    vault = Vault.open(hospital.settings.data_key_file)
    fresh = Pseudonym.new()
    with hospital.store.session() as session:
        (patient,) = [p for p in hospital.store.patients() if p.record_number == number]
        record = vault.open_record(patient.clinical, associated=patient.pseudonym)
        patient.pseudonym, patient.consent_key = str(fresh), consent_key
        patient.clinical = vault.seal(record, associated=str(fresh))
        session.add(patient)
        session.commit()
    return fresh


def _train_numbers(hospital):
    return [p.record_number for p in hospital.store.candidates("train") if p.record_number in hospital.consenting]


def test_attack_front_run_enrolment_hijacked_patient_is_never_trained_on(chain, hospital):
    """Hospital B enrols pseudonyms of hospital A's patients with keys B holds and grants consent with them.
    A's node must not read those patients: they were not enrolled by A with the key A stored (one of them
    A's node thinks it enrolled, the other it never enrolled)."""
    believed, never = _train_numbers(hospital)[:2]
    stored_key = Account.from_key(hospital.keys[believed]).address
    hijacked = [_repseudonymise(hospital, believed, consent_key=stored_key),
                _repseudonymise(hospital, never, consent_key=None)]
    attacker_keys = ["0x" + secrets.token_hex(32) for _ in hijacked]
    chain.other_hospital.enrol(hijacked, [Account.from_key(k).address for k in attacker_keys])
    chain.other_hospital.relay_grants([
        lg.sign_grant(k, chain.deployment, pseudonym=p, study_id=chain.study_id, valid_from=0, valid_until=FAR,
                      nonce=0, deadline=FAR)
        for p, k in zip(hijacked, attacker_keys)
    ])
    assert all(chain.hospital.consents(chain.study_id, hijacked, block=chain.hospital.block_number()))
    hospital.node.train(hospital.config(1), fresh_state())
    (usage,) = hospital.store.usage()
    assert not {str(p) for p in hijacked} & set(usage.pseudonym_list)
    assert len(usage.pseudonym_list) == len(_train_numbers(hospital)) - 2


def test_attack_patient_whose_key_on_chain_differs_from_the_stored_key_is_not_read(hospital):
    """The key on chain must be the one the node stored when it enrolled the patient."""
    number = _train_numbers(hospital)[0]
    with hospital.store.session() as session:
        (patient,) = [p for p in hospital.store.patients() if p.record_number == number]
        patient.consent_key = Account.create().address
        session.add(patient)
        session.commit()
    hospital.node.train(hospital.config(1), fresh_state())
    (usage,) = hospital.store.usage()
    assert str(hospital.pseudonyms[number]) not in usage.pseudonym_list
    assert len(usage.pseudonym_list) == len(_train_numbers(hospital)) - 1


def _gate(hospital) -> ConsentGate:
    return ConsentGate(hospital.chain.hospital, hospital.store, Vault.open(hospital.settings.data_key_file),
                       hospital_account=hospital.chain.hospital.address)


def test_attack_round_outside_the_study_is_refused_by_the_gate(hospital):
    """Round 0, negative rounds and rounds past the study's (5) would use data no anchor can ever cover."""
    gate = _gate(hospital)
    block = hospital.chain.hospital.block_number()
    for round_number in (0, -1, 6, True, 1.5):
        with pytest.raises(Refusal) as refusal:
            gate.check_study(hospital.chain.study_id, block, round_number=round_number)
        assert refusal.value.code == protocol.BAD_REQUEST, round_number
        assert "round" in refusal.value.reason and "no data used" in refusal.value.reason
    for round_number in (1, 5):
        assert gate.check_study(hospital.chain.study_id, block, round_number=round_number).rounds == 5


def test_attack_round_outside_the_study_uses_no_data(hospital):
    for phase in ("train", "evaluate"):
        for round_number in (0, -3):
            with pytest.raises(Refusal) as refusal:
                getattr(hospital.node, phase)(hospital.config(round_number), fresh_state())
            assert refusal.value.code == protocol.BAD_REQUEST
            hospital.uses_nothing()


def test_attack_malformed_pinned_block_is_refused_not_a_crash(hospital):
    for phase in ("train", "evaluate"):
        for block in (-1, -(2**70)):
            with pytest.raises(Refusal) as refusal:
                getattr(hospital.node, phase)(hospital.config(1, block=block), fresh_state())
            assert refusal.value.code == protocol.BAD_REQUEST
            assert "not a block number" in refusal.value.reason
            hospital.uses_nothing()


def test_enrolling_a_pseudonym_another_hospital_took_names_the_record_and_stores_no_key(chain, hospital):
    from node import admin

    number = _train_numbers(hospital)[0]
    taken = _repseudonymise(hospital, number, consent_key=None)
    chain.other_hospital.enrol([taken], [Account.create().address])
    with pytest.raises(lg.ContractRejected, match=f"{number} \\(by hospital {chain.other_hospital.address}, another key\\)"):
        admin.enrol_patients(hospital.settings, chain.hospital, {number: Account.create().address})
    (patient,) = [p for p in hospital.store.patients() if p.record_number == number]
    assert patient.consent_key is None
