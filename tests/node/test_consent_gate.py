"""A hospital node's rounds on the test chain: it uses exactly the patients consenting at the pinned block,
and refuses (using nothing) whenever consent, the study or the chain is unclear."""

from __future__ import annotations

import math

import pytest

from federation import protocol
from federation.commitment import pseudonym_commitment
from federation.ids import Pseudonym, StudyId
from node.consent_gate import Refusal
from node.service import HospitalNode
from node.settings import NodeSettings
from tests.conftest import advance_time
from tests.node.hospital import FAR, fresh_state, hospital  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


def test_trains_only_on_patients_consenting_at_the_pinned_block(hospital):
    outcome = hospital.node.train(hospital.config(1), fresh_state())
    (usage,) = hospital.store.usage()
    assert set(usage.pseudonym_list) == hospital.consented_in("train", hospital.consenting)
    # The exact set is in the usage log (above); the count sent is the noisy, charged weight (issue 13).
    assert outcome.num_examples >= 1 and hospital.store.spends(hospital.study)[-1].release == "count"
    assert outcome.commitment == pseudonym_commitment(Pseudonym.parse(p) for p in usage.pseudonym_list)
    assert 0 < outcome.epsilon_spent <= 3.0


def test_revocation_excludes_the_patient_from_the_next_pinned_block(hospital):
    before = hospital.chain.hospital.block_number()
    train_numbers = {p.record_number for p in hospital.store.candidates("train")}
    leaving = next(n for n in hospital.consenting if n in train_numbers)
    revoked_at = hospital.revoke(leaving)
    hospital.node.train(hospital.config(1, block=before), fresh_state())
    hospital.node.train(hospital.config(2, block=revoked_at), fresh_state())
    first, second = hospital.store.usage()
    gone = str(hospital.pseudonyms[leaving])
    assert gone in first.pseudonym_list  # consent held at the block round 1 pinned
    assert gone not in second.pseudonym_list
    assert len(second.pseudonym_list) == len(first.pseudonym_list) - 1


def test_evaluation_reads_consented_test_patients(hospital):
    outcome = hospital.node.evaluate(hospital.config(1), fresh_state())
    (usage,) = hospital.store.usage()
    # Exactly the consented test patients are read (the usage log); the counts sent are noisy (issue 13).
    assert set(usage.pseudonym_list) == hospital.consented_in("test", hospital.consenting)
    assert outcome.num_examples >= 0 and math.isfinite(outcome.correct)


def test_refuses_a_study_its_hospital_has_not_accepted(chain, hospital):
    other_study = StudyId.new()
    chain.operator.propose_study(other_study, purpose="HRESCH", task_id="heart-disease/v1", epsilon_budget=1,
                                 delta_exponent=5, rounds=2, ends_at=FAR)
    with pytest.raises(Refusal) as refusal:
        hospital.node.train(hospital.config(1, study_id=other_study), fresh_state())
    assert refusal.value.code == protocol.STUDY_NOT_ACCEPTED
    assert "has not accepted" in refusal.value.reason
    hospital.uses_nothing()


def test_refuses_an_unknown_study(hospital):
    with pytest.raises(Refusal) as refusal:
        hospital.node.train(hospital.config(1, study_id=b"\x07" * 32), fresh_state())
    assert refusal.value.code == protocol.STUDY_NOT_ACCEPTED
    assert "not known to the consortium" in refusal.value.reason
    hospital.uses_nothing()


def test_refuses_when_the_chain_cannot_be_reached(hospital, tmp_path):
    dead = NodeSettings(home=hospital.settings.home, hospital="cleveland", rpc_url="http://127.0.0.1:9",
                        deployment_file=tmp_path / "deployment.json", chain_timeout_s=1)
    hospital.chain.deployment.save(dead.deployment_file)
    with pytest.raises(Refusal) as refusal:
        HospitalNode(dead).train(hospital.config(1), fresh_state())
    assert refusal.value.code == protocol.CHAIN_UNAVAILABLE
    assert "cannot be reached" in refusal.value.reason
    hospital.uses_nothing()


def test_refuses_a_malformed_consent_answer(hospital, monkeypatch):
    # The gate reads consent by enrolment index (node/consent_gate.py `consented`).
    monkeypatch.setattr(hospital.chain.hospital, "consents_by_index", lambda study, indexes, block, **_: [True])
    with pytest.raises(Refusal) as refusal:
        hospital.node.train(hospital.config(1), fresh_state())
    assert refusal.value.code == protocol.CONSENT_UNCLEAR
    hospital.uses_nothing()


def test_refuses_a_pinned_block_ahead_of_the_chain(hospital):
    with pytest.raises(Refusal, match="ahead of the chain"):
        hospital.node.train(hospital.config(1, block=10**9), fresh_state())
    hospital.uses_nothing()


def test_refuses_a_pinned_block_older_than_it_accepts(hospital):
    old = hospital.chain.hospital.block_number()
    advance_time(hospital.chain.w3, int(hospital.settings.max_pinned_block_age_s) + 60)
    with pytest.raises(Refusal, match="s old"):
        hospital.node.train(hospital.config(1, block=old), fresh_state())
    hospital.uses_nothing()


def test_refuses_a_replayed_round(hospital):
    hospital.node.train(hospital.config(1), fresh_state())
    with pytest.raises(Refusal, match="replayed"):
        hospital.node.train(hospital.config(1), fresh_state())
    assert len(hospital.store.usage()) == 1


def test_refuses_a_tampered_record(hospital):
    with hospital.store.session() as session:
        patient = hospital.store.candidates("train")[0]
        patient.clinical = patient.clinical[:-1] + bytes([patient.clinical[-1] ^ 1])
        session.add(patient)
        session.commit()
    if patient.record_number not in hospital.consenting:
        pytest.skip("the tampered patient does not consent")
    with pytest.raises(Refusal) as refusal:
        hospital.node.train(hospital.config(1), fresh_state())
    assert refusal.value.code == protocol.RECORD_UNCLEAR
    hospital.uses_nothing()
