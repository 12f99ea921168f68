"""The independent audit (contracts/audit.py) of a hospital's usage log against the chain's anchors and
consents: honest rounds pass, a forged log is found, a lost reply is told apart from a violation."""

from __future__ import annotations

import json

import pytest

from contracts import ledger as lg
from contracts.audit import audit_study
from federation.commitment import combined_commitment
from federation.ids import Digest
from node import admin
from tests.node.hospital import fresh_state, hospital  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


def _anchor(chain, hospital, round_number, block):
    entries = {u.phase: u for u in hospital.store.usage() if u.round == round_number}
    train, evaluate = Digest.parse(entries["train"].commitment), Digest.parse(entries["evaluate"].commitment)
    chain.coordinator.anchor_round(chain.study_id, round_number, pinned_block=block, model_hash=b"\x01" * 32,
                                   commitments={chain.hospital.address: combined_commitment(train, evaluate)})


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
    forged["entries"][0]["pseudonyms"].append(str(hospital.pseudonyms[outsider]))
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
        chain.hospital.address: combined_commitment(Digest.parse(entries["train"].commitment), b"")})
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
    evaluate["pseudonyms"].append(str(hospital.pseudonyms[outsider]))
    result = audit_study(auditor, chain.study_id, {chain.hospital.address: forged})
    assert any("used without consent" in f for f in result.findings) and result.violations >= 1
