"""Erasing a patient (issue 14 item 6, docs/privacy.md): the record, its provenance and every portal row naming
the patient are deleted; the usage log's entries naming the patient are redacted once the chain confirms the
patient's consent at each entry's block (so the pseudonym is nowhere in node.db), and the audit of the anchored
round still passes, reporting the redacted uses apart; an entry that would be a violation is never redacted; a
receipt says what was erased and redacted, by the pseudonym's hash only; a second erase says "unknown patient"."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlmodel import select

from contracts import ledger as lg
from contracts.audit import audit_study
from deploy.cli import main
from federation.commitment import combined_commitment, pseudonym_commitment
from federation.ids import Pseudonym, StudyId
from node import admin
from node.erase import ErasureError, erase_patient
from node.portal.models import ConsentRelay, EnrolmentCode, PortalAccount
from node.store import PatientSource, RoundRefusal, RoundUsage
from tests.node.test_bulk import FAR, Node


# Tests that ask the chain nothing a backend could answer differently run on the in-process chain only.
ONE_CHAIN = pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)


@pytest.fixture
def node(chain, tmp_path):
    node = Node(chain, tmp_path / "node")
    node.enrol()
    node.before_grants = chain.hospital.block_number()  # no patient consents yet at this block
    grants = [lg.sign_grant(node.keys[n], chain.deployment, pseudonym=Pseudonym.parse(node.pseudonyms[n]),
                            study_id=chain.study_id, valid_from=0, valid_until=FAR, nonce=0, deadline=FAR)
              for n in node.numbers]
    chain.hospital.relay_grants(grants)
    pseudonyms = sorted(Pseudonym.parse(p) for p in node.pseudonyms.values())
    block = chain.hospital.block_number()
    node.store.record_usage(RoundUsage(
        study_id=str(StudyId(chain.study_id)), round=1, phase="train", block=block,
        commitment=str(pseudonym_commitment(pseudonyms)), pseudonyms=json.dumps([str(p) for p in pseudonyms])))
    chain.coordinator.anchor_round(chain.study_id, 1, pinned_block=block, model_hash=b"\x01" * 32, commitments={
        chain.hospital.address: combined_commitment(pseudonym_commitment(pseudonyms), b"")})
    node.ledger = lg.Ledger(chain.w3, chain.deployment)  # read-only, as the command opens it
    return node


def _audit(node, tmp_path):
    document = json.loads(admin.export_usage(node.settings, tmp_path / "usage.json").read_text())
    document["account"] = node.chain.hospital.address
    return audit_study(lg.Ledger(node.chain.w3, node.chain.deployment), node.chain.study_id,
                       {node.chain.hospital.address: document})


def test_erasure_deletes_the_record_keeps_the_audit_and_writes_a_receipt(node, tmp_path):
    number = node.numbers[0]
    pseudonym = node.pseudonyms[number]
    with node.store.session() as session:  # the patient also has a portal account, a code and a relayed change
        session.add(PortalAccount(username="alice", record_number=number, pseudonym=pseudonym,
                                  consent_address=node.addresses[number], password_salt=b"s", password_hash=b"h",
                                  key_salt=b"", sealed_key=b""))
        session.add(EnrolmentCode(code_hash="c" * 64, record_number=number,
                                  expires_at=datetime.now(timezone.utc) + timedelta(days=1)))
        session.add(ConsentRelay(account_id=1, study_id="0x" + "00" * 32, action="grant", pseudonym=pseudonym))
        session.add(RoundRefusal(study_id="0x" + "00" * 32, round=1, phase="train", code=4005,  # as node/vault.py words it
                                 reason=f"the record of {pseudonym[:10]}… cannot be decrypted: wrong key or tampered data"))
        session.commit()
    before = _audit(node, tmp_path)
    assert (before.violations, before.checked, before.rounds, before.unanchored_phases) == (0, 6, 1, 0)

    receipt = erase_patient(node.settings, number, ledger=node.ledger)

    assert number not in {p.record_number for p in node.store.patients()}
    with node.store.session() as session:
        for table, column in ((PatientSource, PatientSource.pseudonym), (PortalAccount, PortalAccount.pseudonym),
                              (ConsentRelay, ConsentRelay.pseudonym)):
            assert session.exec(select(table).where(column == pseudonym)).first() is None, table
        assert session.exec(select(EnrolmentCode).where(EnrolmentCode.record_number == number)).first() is None
    after = _audit(node, tmp_path)
    # The anchored round still matches (the entry's stored commitment), the other five are checked on chain as
    # before, and the erased patient's use is reported apart: neither a violation nor unverifiable.
    assert (after.violations, after.commitment_mismatches, after.rounds, after.unanchored_phases) == (0, 0, 1, 0)
    assert (after.checked, after.unverified, after.erased_uses) == (before.checked - 1, 0, 1)
    assert any("uses of erased patients, consent verified at erasure: 1" in f for f in after.findings)
    assert receipt["pseudonym_sha256"] == hashlib.sha256(pseudonym.encode()).hexdigest()
    assert receipt["deleted"]["record"] == 1 and receipt["deleted"]["portal_account"] == 1
    assert receipt["deleted"]["provenance"] == 1 and receipt["deleted"]["refusal_reasons_redacted"] == 1
    assert receipt["redacted"] == [{"study": str(StudyId(node.chain.study_id)), "round": 1, "phase": "train",
                                    "consent_verified_at_block": json.loads((tmp_path / "usage.json").read_text())
                                    ["entries"][0]["block"]}]
    assert receipt["kept"] == []
    written = Path(receipt["receipt_file"]).read_text()
    assert number not in written and pseudonym not in written  # the receipt links to nobody either
    assert receipt["database_file"].startswith("rewritten (VACUUM)")
    _assert_nowhere_in_the_home_database(node, pseudonym)
    with pytest.raises(ErasureError, match="unknown patient"):
        erase_patient(node.settings, number, ledger=node.ledger)


def _assert_nowhere_in_the_home_database(node, pseudonym: str) -> None:
    """Neither the pseudonym's text nor its 32 bytes are anywhere in node.db's file (or a WAL beside it): no
    free page or leftover cell keeps it."""
    database = Path(node.store.engine.url.database)
    for path in [database, *database.parent.glob(database.name + "-*")]:
        content = path.read_bytes()
        for form in (pseudonym.lower(), pseudonym.lower()[2:], pseudonym.upper()[2:], pseudonym.lower()[:10]):
            assert form.encode() not in content, (path.name, form)
        assert bytes.fromhex(pseudonym[2:]) not in content, path.name


def test_a_use_that_would_be_a_violation_is_not_redacted_and_erase_says_so(node, tmp_path, monkeypatch, capsys):
    """The patient's pseudonym in an entry read before any consent (a real violation): erasing the patient must
    not hide it. The record goes; that entry keeps the pseudonym, the receipt and the audit both name it."""
    number = node.numbers[0]
    pseudonym = node.pseudonyms[number]
    early = [Pseudonym.parse(pseudonym)]
    node.store.record_usage(RoundUsage(
        study_id=str(StudyId(node.chain.study_id)), round=2, phase="train", block=node.before_grants,
        commitment=str(pseudonym_commitment(early)), pseudonyms=json.dumps([pseudonym])))

    monkeypatch.setattr("node.erase._ledger", lambda settings: node.ledger)  # the command's read-only ledger

    assert main(["node", "erase", "--home", str(node.settings.home), number]) == 1
    out, err = capsys.readouterr()
    receipt = json.loads(out)
    assert err.splitlines()[-1] == "twinledger: 1 usage-log entries still name the patient (see 'kept')"
    assert number not in {p.record_number for p in node.store.patients()}
    assert [r["round"] for r in receipt["redacted"]] == [1]  # the consented use is redacted
    assert [(k["round"], k["block"]) for k in receipt["kept"]] == [(2, node.before_grants)]
    assert "without consent" in receipt["kept"][0]["why"]
    kept = [u for u in node.store.usage_log() if u.round == 2]
    assert kept[0].pseudonym_list == [pseudonym] and kept[0].redactions == "[]"
    audit = _audit(node, tmp_path)
    assert audit.violations == 1 and audit.erased_uses == 1
    assert any(f"{Pseudonym.parse(pseudonym).short(10)} used without consent" in f for f in audit.findings)


@ONE_CHAIN
def test_an_entry_whose_commitment_does_not_match_its_pseudonyms_is_not_redacted(node, tmp_path):
    """Redacting keeps the stored commitment in place of the pseudonym: an entry whose stored commitment its own
    pseudonyms do not give (a damaged or altered log) would be laundered by it, so it is kept as it is."""
    number = node.numbers[0]
    with node.store.session() as session:
        entry = session.exec(select(RoundUsage)).first()
        entry.commitment = "0x" + "ab" * 32
        session.add(entry)
        session.commit()
    receipt = erase_patient(node.settings, number, ledger=node.ledger)
    assert receipt["redacted"] == [] and "commitment" in receipt["kept"][0]["why"]


@ONE_CHAIN
def test_a_reader_of_the_database_during_the_erase_is_named_in_the_receipt(node):
    """The portal keeps node.db in WAL mode and may be reading: the erase still completes, and the receipt says
    the main file keeps the old pages until SQLite's next checkpoint, which then leaves none."""
    import sqlite3

    database = node.store.engine.url.database
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
    reader = sqlite3.connect(database, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM patient").fetchone()
    try:
        receipt = erase_patient(node.settings, node.numbers[0], ledger=node.ledger)
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert "until SQLite's next checkpoint" in receipt["database_file"]
    assert len(receipt["redacted"]) == 1
    with sqlite3.connect(database) as connection:  # what SQLite does by itself later (or its last connection's close)
        assert connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    _assert_nowhere_in_the_home_database(node, node.pseudonyms[node.numbers[0]])


@ONE_CHAIN
def test_erase_refuses_before_deleting_anything_when_the_chain_cannot_be_read(node):
    """Redaction needs the chain's answer; with none, nothing is erased yet, so the erase can be run again."""
    number = node.numbers[0]

    class Unreachable:
        def consents(self, *args, **kwargs):
            raise lg.ChainUnavailable("connection refused")

    with pytest.raises(ErasureError, match="chain"):
        erase_patient(node.settings, number, ledger=Unreachable())
    assert number in {p.record_number for p in node.store.patients()}


def test_the_command_says_unknown_patient_in_one_line(tmp_path, capsys):
    settings = admin.init_node(tmp_path / "node", hospital="cleveland", rpc_url="unused", deployment_file=None)
    assert main(["node", "erase", "--home", str(settings.home), "CLE-404"]) == 2
    # The last line, after the migration's log lines (and a closed stream of an earlier test may log a traceback).
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("twinledger: unknown patient 'CLE-404'") and "ErasureError" not in err


@ONE_CHAIN
def test_another_patients_round_proof_in_the_portal_still_matches_the_chain_after_an_erase(node):
    """The portal shows a patient the commitment of a round that used them, from the usage log, beside the
    chain's: after another patient of the same round is erased, the log's side is the entry's stored commitment."""
    from node.portal.studies import round_proof

    erase_patient(node.settings, node.numbers[0], ledger=node.ledger)
    proof = round_proof(node.chain.hospital, node.store, node.pseudonyms[node.numbers[1]], node.chain.study_id, 1)
    assert proof.commitment_on_chain is not None and proof.commitment_from_log == proof.commitment_on_chain


@pytest.mark.parametrize("chain", [pytest.param("anvil", marks=pytest.mark.slow)], indirect=True)
def test_the_command_reads_consent_from_the_chain_its_home_names(node, tmp_path, capsys, anvil_url):
    """`twinledger node erase` opens the chain of node.toml itself, read-only, and redacts what it confirms."""
    deployment = tmp_path / "deployment.json"
    node.chain.deployment.save(deployment)
    node.settings.replace(rpc_url=anvil_url, deployment_file=deployment).save()
    number = node.numbers[0]

    assert main(["node", "erase", "--home", str(node.settings.home), number]) == 0

    receipt = json.loads(capsys.readouterr().out)
    assert [r["round"] for r in receipt["redacted"]] == [1] and receipt["kept"] == []
    _assert_nowhere_in_the_home_database(node, node.pseudonyms[number])
