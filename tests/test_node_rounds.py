"""A hospital node's rounds on the in-process chain: the consent gate, the budget, failing closed, and
the independent audit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from eth_account import Account

from contracts import ledger as lg
from contracts.audit import audit_study
from federation import protocol
from federation.protocol import RoundConfig
from federation.tasks import get_task
from node import admin
from node.consent_gate import Refusal
from node.privacy import PrivacyBudget, epsilon_of
from node.service import HospitalNode
from node.settings import NodeSettings
from node.store import Store

DATA = Path(__file__).resolve().parent.parent / "deploy" / "data" / "heart-disease"
FAR = int(time.time()) + 365 * 24 * 3600


class Hospital:
    """A node with 40 Cleveland patients imported and enrolled, 80 % of them consenting.

    Few patients keep the in-process chain quick: it verifies every relayed signature in Python.
    """

    def __init__(self, chain, home: Path):
        self.chain = chain
        self.settings = admin.init_node(home, hospital="cleveland", rpc_url="unused", deployment_file=None)
        records = home / "cleveland-40.csv"
        records.write_text("\n".join((DATA / "processed.cleveland.data").read_text().splitlines()[:40]) + "\n")
        admin.import_records(self.settings, records)
        self.store = Store(self.settings.resolved_database_url)
        self.keys = {p.record_number: "0x" + __import__("secrets").token_hex(32) for p in self.store.patients()}
        admin.enrol_patients(self.settings, chain.hospital, {n: Account.from_key(k).address for n, k in self.keys.items()})
        self.pseudonyms = {p.record_number: bytes.fromhex(p.pseudonym[2:]) for p in self.store.patients()}
        numbers = sorted(self.keys)
        self.consenting = numbers[: int(len(numbers) * 0.8)]
        grants = [
            lg.sign_grant(self.keys[n], chain.deployment, pseudonym=self.pseudonyms[n], study_id=chain.study_id,
                          valid_from=0, valid_until=FAR, nonce=0, deadline=FAR)
            for n in self.consenting
        ]
        chain.hospital.relay_grants(grants)
        self.node = HospitalNode(self.settings, ledger=chain.hospital)

    def config(self, round_number: int, block: int | None = None, study_id: bytes | None = None) -> RoundConfig:
        return RoundConfig(study_id=study_id or self.chain.study_id, round=round_number,
                           block=self.chain.hospital.block_number() if block is None else block, local_epochs=1)

    def revoke(self, number: str) -> int:
        pseudonym = self.pseudonyms[number]
        revoke = lg.sign_revoke(self.keys[number], self.chain.deployment, pseudonym=pseudonym, study_id=self.chain.study_id,
                                nonce=self.chain.hospital.patient_nonce(pseudonym), deadline=FAR)
        return self.chain.hospital.relay_revoke(revoke)["blockNumber"]

    def consented_in(self, cohort: str, numbers) -> set[str]:
        return {"0x" + self.pseudonyms[p.record_number].hex() for p in self.store.candidates(cohort) if p.record_number in numbers}


def fresh_state():
    torch.manual_seed(0)
    return get_task("heart-disease/v1").build_model().state_dict()


@pytest.fixture
def hospital(chain, tmp_path):
    return Hospital(chain, tmp_path / "cleveland")


def test_trains_only_on_patients_consenting_at_the_pinned_block(hospital):
    outcome = hospital.node.train(hospital.config(1), fresh_state())
    (usage,) = hospital.store.usage()
    assert set(usage.pseudonym_list) == hospital.consented_in("train", hospital.consenting)
    assert outcome.num_examples == len(usage.pseudonym_list)
    assert outcome.commitment == lg.pseudonym_commitment(bytes.fromhex(p[2:]) for p in usage.pseudonym_list)
    assert 0 < outcome.epsilon_spent <= 3.0


def test_revocation_excludes_the_patient_from_the_next_pinned_block(hospital):
    before = hospital.chain.hospital.block_number()
    train_numbers = {p.record_number for p in hospital.store.candidates("train")}
    leaving = next(n for n in hospital.consenting if n in train_numbers)
    revoked_at = hospital.revoke(leaving)
    hospital.node.train(hospital.config(1, block=before), fresh_state())
    hospital.node.train(hospital.config(2, block=revoked_at), fresh_state())
    first, second = hospital.store.usage()
    gone = "0x" + hospital.pseudonyms[leaving].hex()
    assert gone in first.pseudonym_list  # consent held at the block round 1 pinned
    assert gone not in second.pseudonym_list
    assert len(second.pseudonym_list) == len(first.pseudonym_list) - 1


def test_evaluation_reads_consented_test_patients(hospital):
    outcome = hospital.node.evaluate(hospital.config(1), fresh_state())
    assert outcome.num_examples == len(hospital.consented_in("test", hospital.consenting))
    assert 0 <= outcome.correct <= outcome.num_examples


def _uses_nothing(hospital):
    assert hospital.store.usage() == []
    assert hospital.store.spends("0x" + hospital.chain.study_id.hex()) == []


def test_refuses_a_study_its_hospital_has_not_accepted(chain, hospital):
    other_study = lg.new_study_id()
    chain.operator.propose_study(other_study, purpose="HRESCH", task_id="heart-disease/v1", epsilon_budget=1,
                                 delta_exponent=5, rounds=2, ends_at=FAR)
    with pytest.raises(Refusal) as refusal:
        hospital.node.train(hospital.config(1, study_id=other_study), fresh_state())
    assert refusal.value.code == protocol.STUDY_NOT_ACCEPTED
    assert "has not accepted" in refusal.value.reason
    _uses_nothing(hospital)


def test_refuses_an_unknown_study(hospital):
    with pytest.raises(Refusal) as refusal:
        hospital.node.train(hospital.config(1, study_id=b"\x07" * 32), fresh_state())
    assert refusal.value.code == protocol.STUDY_NOT_ACCEPTED
    assert "not known to the consortium" in refusal.value.reason
    _uses_nothing(hospital)


def test_refuses_when_the_chain_cannot_be_reached(hospital, tmp_path):
    dead = NodeSettings(home=hospital.settings.home, hospital="cleveland", rpc_url="http://127.0.0.1:9",
                        deployment_file=tmp_path / "deployment.json", chain_timeout_s=1)
    hospital.chain.deployment.save(dead.deployment_file)
    with pytest.raises(Refusal) as refusal:
        HospitalNode(dead).train(hospital.config(1), fresh_state())
    assert refusal.value.code == protocol.CHAIN_UNAVAILABLE
    assert "cannot be reached" in refusal.value.reason
    _uses_nothing(hospital)


def test_refuses_a_malformed_consent_answer(hospital, monkeypatch):
    monkeypatch.setattr(hospital.chain.hospital, "consents", lambda study, pseudonyms, block: [True])
    with pytest.raises(Refusal) as refusal:
        hospital.node.train(hospital.config(1), fresh_state())
    assert refusal.value.code == protocol.CONSENT_UNCLEAR
    _uses_nothing(hospital)


def test_refuses_a_pinned_block_ahead_of_the_chain(hospital):
    with pytest.raises(Refusal, match="ahead of the chain"):
        hospital.node.train(hospital.config(1, block=10**9), fresh_state())
    _uses_nothing(hospital)


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
    _uses_nothing(hospital)


def test_budget_is_never_exceeded_and_survives_a_restart(hospital):
    study = hospital.chain.hospital.study(hospital.chain.study_id)
    for round_number in range(1, study.rounds + 1):
        outcome = hospital.node.train(hospital.config(round_number), fresh_state())
        assert outcome.epsilon_spent <= study.epsilon_budget + 1e-9
    restarted = HospitalNode(NodeSettings.load(hospital.settings.home), ledger=hospital.chain.hospital)
    with pytest.raises(Refusal) as refusal:
        restarted.train(hospital.config(study.rounds + 1), fresh_state())
    assert refusal.value.code == protocol.BUDGET_SPENT
    budget = PrivacyBudget(restarted.store, study_id="0x" + hospital.chain.study_id.hex(), epsilon_budget=3.0, delta=1e-5)
    assert budget.spent() == pytest.approx(outcome.epsilon_spent)


def test_epsilon_is_recomputed_from_the_logged_steps(hospital):
    hospital.node.train(hospital.config(1), fresh_state())
    (spend,) = hospital.store.spends("0x" + hospital.chain.study_id.hex())
    assert spend.steps > 0 and 0 < spend.sample_rate <= 1
    assert epsilon_of([(spend.noise_multiplier, spend.sample_rate, spend.steps)], delta=spend.delta) == pytest.approx(
        spend.epsilon_after
    )


def _anchor(chain, hospital, round_number, block):
    entries = {u.phase: u for u in hospital.store.usage() if u.round == round_number}
    train = bytes.fromhex(entries["train"].commitment[2:])
    evaluate = bytes.fromhex(entries["evaluate"].commitment[2:])
    chain.coordinator.anchor_round(chain.study_id, round_number, pinned_block=block, model_hash=b"\x01" * 32,
                                   commitments={chain.hospital.address: protocol.combined_commitment(train, evaluate)})


def test_audit_finds_no_violation_in_honest_rounds_and_finds_a_forged_log(hospital, tmp_path):
    chain = hospital.chain
    block = chain.hospital.block_number()
    hospital.node.train(hospital.config(1, block=block), fresh_state())
    hospital.node.evaluate(hospital.config(1, block=block), fresh_state())
    _anchor(chain, hospital, 1, block)
    log_path = admin.export_usage(hospital.settings, tmp_path / "usage.json")
    document = json.loads(log_path.read_text())
    document["account"] = chain.hospital.address
    auditor = lg.Ledger(chain.w3, chain.deployment)
    honest = audit_study(auditor, chain.study_id, {chain.hospital.address: document})
    assert honest.violations == 0 and honest.rounds == 1 and honest.checked > 0

    outsider = next(n for n in hospital.keys if n not in hospital.consenting)
    forged = json.loads(json.dumps(document))
    forged["entries"][0]["pseudonyms"].append("0x" + hospital.pseudonyms[outsider].hex())
    result = audit_study(auditor, chain.study_id, {chain.hospital.address: forged})
    assert result.violations >= 2  # the unconsented pseudonym, and the commitment no longer matches
    assert any("used without consent" in f for f in result.findings)


def test_audit_reports_a_lost_reply_apart_and_still_checks_its_patients(hospital, tmp_path):
    """A node that evaluated but whose reply never arrived: the anchor has its training set and an empty
    evaluation. That is reported as an unanchored phase, not a violation, unless a patient in it lacked consent."""
    chain = hospital.chain
    block = chain.hospital.block_number()
    hospital.node.train(hospital.config(1, block=block), fresh_state())
    hospital.node.evaluate(hospital.config(1, block=block), fresh_state())
    entries = {u.phase: u for u in hospital.store.usage()}
    chain.coordinator.anchor_round(chain.study_id, 1, pinned_block=block, model_hash=b"\x01" * 32, commitments={
        chain.hospital.address: protocol.combined_commitment(bytes.fromhex(entries["train"].commitment[2:]), b"")})
    document = json.loads(admin.export_usage(hospital.settings, tmp_path / "usage.json").read_text())
    document["account"] = chain.hospital.address
    auditor = lg.Ledger(chain.w3, chain.deployment)
    lost = audit_study(auditor, chain.study_id, {chain.hospital.address: document})
    assert lost.violations == 0 and lost.unanchored_phases == 1 and lost.commitment_mismatches == 0
    assert any("evaluate: logged but not anchored" in f for f in lost.findings)
    assert lost.checked == len(set(entries["train"].pseudonym_list) | set(entries["evaluate"].pseudonym_list))

    outsider = next(n for n in hospital.keys if n not in hospital.consenting)
    forged = json.loads(json.dumps(document))
    evaluate = next(e for e in forged["entries"] if e["phase"] == "evaluate")
    evaluate["pseudonyms"].append("0x" + hospital.pseudonyms[outsider].hex())
    result = audit_study(auditor, chain.study_id, {chain.hospital.address: forged})
    assert any("used without consent" in f for f in result.findings) and result.violations >= 1


def test_refuses_a_pinned_block_older_than_it_accepts(hospital):
    from tests.conftest import advance_time

    old = hospital.chain.hospital.block_number()
    advance_time(hospital.chain.w3, int(hospital.settings.max_pinned_block_age_s) + 60)
    with pytest.raises(Refusal, match="s old"):
        hospital.node.train(hospital.config(1, block=old), fresh_state())
    _uses_nothing(hospital)
