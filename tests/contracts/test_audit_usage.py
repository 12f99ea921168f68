"""The write-ahead usage log and the audit that reads it in full (issue 15): a node writes its intent to read a
cohort before it decrypts anything and completes or voids it after; the auditor checks every pseudonym of every
entry against the chain at its block, lists every use the anchors do not hold (lost replies, rounds never
anchored, reads that never completed) and counts as violations only uses without consent."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text

from contracts import ledger as lg
from contracts.audit import audit_study
from federation.commitment import combined_commitment
from federation.ids import Digest
from node import admin
from node.consent_gate import Refusal
from node.store import USAGE_COMPLETED, USAGE_INTENT, USAGE_VOIDED, Store
from node.vault import Vault, VaultError
from tests.node.hospital import fresh_state, hospital  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow  # trains


class Killed(BaseException):
    """The ClientApp's process dies here (SIGKILL): no handler of the node runs after it."""


def _log(hospital, tmp_path) -> dict:
    document = json.loads(admin.export_usage(hospital.settings, tmp_path / "usage.json").read_text())
    document["account"] = hospital.chain.hospital.address
    return document


def _audit(hospital, document):
    chain = hospital.chain
    return audit_study(lg.Ledger(chain.w3, chain.deployment), chain.study_id, {chain.hospital.address: document})


def test_the_intent_is_written_before_any_record_is_decrypted(hospital, monkeypatch):
    opened = []
    original = Vault.open_record

    def open_record(vault, sealed, *, associated):
        opened.append([(u.phase, u.status) for u in hospital.store.usage_log()])
        return original(vault, sealed, associated=associated)

    monkeypatch.setattr(Vault, "open_record", open_record)
    hospital.node.train(hospital.config(1), fresh_state())
    assert opened and all(seen == [("train", USAGE_INTENT)] for seen in opened)
    [entry] = hospital.store.usage_log()
    assert entry.status == USAGE_COMPLETED and set(entry.pseudonym_list) == hospital.consented_in(
        "train", hospital.consenting)


def test_a_refusal_after_the_intent_voids_it(hospital, monkeypatch):
    config = hospital.config(1)
    hospital.node.train(config, fresh_state())

    def unreadable(vault, sealed, *, associated):
        raise VaultError("the record's authentication tag does not verify")

    monkeypatch.setattr(Vault, "open_record", unreadable)
    with pytest.raises(Refusal):
        hospital.node.evaluate(config, fresh_state())
    statuses = [(u.phase, u.status) for u in hospital.store.usage_log()]
    assert statuses == [("train", USAGE_COMPLETED), ("evaluate", USAGE_VOIDED)]
    assert [u.phase for u in hospital.store.usage()] == ["train"]  # completed uses only


def test_a_reply_lost_after_training_is_seen_by_the_audit_and_is_no_violation(hospital, tmp_path):
    """The node trained (its budget is spent) and its reply never reached the coordinator: the round was never
    anchored. The audit lists the use, checks its patients at the pinned block and finds no violation."""
    config = hospital.config(1)
    hospital.node.train(config, fresh_state())  # the reply is dropped: nothing is anchored
    assert hospital.store.spends(hospital.study)
    result = _audit(hospital, _log(hospital, tmp_path))
    assert result.violations == 0 and result.rounds == 0
    assert result.checked == len(hospital.consented_in("train", hospital.consenting))
    [use] = result.unanchored
    assert (use["round"], use["phase"], use["status"], use["block"]) == (1, "train", USAGE_COMPLETED, config.block)
    assert any("round 1 cleveland train: logged but not anchored" in f for f in result.findings)


def test_a_node_killed_while_training_leaves_an_intent_the_audit_checks(hospital, tmp_path, monkeypatch):
    def killed(*args, **kwargs):
        raise Killed()

    monkeypatch.setattr("node.trainer.train_private", killed)
    with pytest.raises(Killed):
        hospital.node.train(hospital.config(1), fresh_state())
    [entry] = hospital.store.usage_log()
    assert entry.status == USAGE_INTENT and hospital.store.usage() == []
    result = _audit(hospital, _log(hospital, tmp_path))
    assert result.violations == 0 and result.checked == len(entry.pseudonym_list)
    [use] = result.unanchored
    assert use["status"] == USAGE_INTENT and use["patients"] == len(entry.pseudonym_list)


def test_an_unanchored_use_of_a_patient_without_consent_is_a_violation(hospital, tmp_path):
    hospital.node.train(hospital.config(1), fresh_state())
    document = _log(hospital, tmp_path)
    outsider = next(n for n in hospital.keys if n not in hospital.consenting)
    document["entries"][0]["pseudonyms"].append(str(hospital.pseudonyms[outsider]))
    result = _audit(hospital, document)
    assert result.violations == 1 and any("used without consent" in f for f in result.findings)


def test_a_use_in_an_anchored_round_by_a_hospital_the_anchor_leaves_out_is_listed(hospital, tmp_path):
    """The anchor names another hospital only (this one's replies were lost): this hospital's use is still
    listed and checked."""
    chain = hospital.chain
    config = hospital.config(1)
    hospital.node.train(config, fresh_state())
    hospital.node.evaluate(config, fresh_state())
    chain.coordinator.anchor_round(chain.study_id, 1, pinned_block=config.block, model_hash=b"\x01" * 32,
                                   commitments={chain.other_hospital.address: combined_commitment(b"\x02" * 32, b"")})
    result = _audit(hospital, _log(hospital, tmp_path))
    assert result.rounds == 1 and {u["phase"] for u in result.unanchored} == {"train", "evaluate"}
    assert result.checked > 0


def test_an_old_export_without_statuses_reads_as_completed_uses(hospital, tmp_path):
    config = hospital.config(1)
    hospital.node.train(config, fresh_state())
    entry = hospital.store.usage()[0]
    hospital.chain.coordinator.anchor_round(
        hospital.chain.study_id, 1, pinned_block=config.block, model_hash=b"\x01" * 32,
        commitments={hospital.chain.hospital.address: combined_commitment(Digest.parse(entry.commitment), b"")})
    document = _log(hospital, tmp_path)
    for item in document["entries"]:
        del item["status"]
    result = _audit(hospital, document)
    assert result.violations == 0 and result.unanchored == [] and result.checked > 0


def test_an_old_database_gets_the_status_column_with_its_uses_completed(tmp_path):
    url = f"sqlite:///{tmp_path / 'node.db'}"
    Store(url)  # today's schema, then drop back to the old usage table of a database from before migrations
    engine = create_engine(url)
    with engine.begin() as db:
        db.execute(text("DROP TABLE alembic_version"))
        db.execute(text("DROP TABLE roundusage"))
        db.execute(text("CREATE TABLE roundusage (id INTEGER PRIMARY KEY, study_id VARCHAR, round INTEGER, "
                        "phase VARCHAR, block INTEGER, commitment VARCHAR, pseudonyms VARCHAR, recorded_at DATETIME)"))
        db.execute(text("INSERT INTO roundusage VALUES (1, '0xab', 1, 'train', 5, '0x00', '[]', '2026-01-01')"))
    [usage] = Store(url).usage()
    assert usage.status == USAGE_COMPLETED
