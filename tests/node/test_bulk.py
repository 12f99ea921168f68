"""Hospital IT's bulk work (issue 14 item 6): enrolling imported patients in batches with a per-patient report,
and importing consents signed elsewhere as EIP-712 signatures: each signature checked before it is relayed
(forged, expired, another registry's domain: that line is reported, the rest go on), a malformed file refused
naming its line, the rest relayed through the portal's outbox."""

from __future__ import annotations

import dataclasses
import io
import json
import secrets
import time
from pathlib import Path

import pytest
from eth_account import Account

from contracts import ledger as lg
from federation.ids import hex0x
from node import admin, bulk, consent_import
from node.store import Store

DATA = Path(__file__).resolve().parents[2] / "deploy" / "data" / "heart-disease"
FAR = int(time.time()) + 365 * 24 * 3600


class Node:
    """Six imported patients, each with a wallet key, none enrolled yet."""

    def __init__(self, chain, home: Path):
        self.chain = chain
        self.settings = admin.init_node(home, hospital="cleveland", rpc_url="unused", deployment_file=None)
        records = home / "cleveland-6.csv"
        records.write_text("\n".join((DATA / "processed.cleveland.data").read_text().splitlines()[:6]) + "\n")
        admin.import_records(self.settings, records)
        self.store = Store(self.settings.resolved_database_url)
        self.numbers = [p.record_number for p in self.store.patients()]
        self.pseudonyms = {p.record_number: p.pseudonym for p in self.store.patients()}
        self.keys = {n: "0x" + secrets.token_hex(32) for n in self.numbers}
        self.addresses = {n: Account.from_key(k).address for n, k in self.keys.items()}

    def enrol(self, numbers=None) -> list[bulk.Outcome]:
        return bulk.enrol(self.settings, self.chain.hospital, self.addresses, numbers, batch=4,
                          progress=bulk.Progress("enrolling", 0, out=io.StringIO()))

    def grant_line(self, number: str, *, deadline: int = FAR, key: str | None = None,
                   deployment: lg.Deployment | None = None, by_pseudonym: bool = False) -> dict:
        signed = lg.sign_grant(key or self.keys[number], deployment or self.chain.deployment,
                               pseudonym=bytes.fromhex(self.pseudonyms[number][2:]), study_id=self.chain.study_id,
                               valid_from=0, valid_until=FAR, nonce=0, deadline=deadline)
        who = {"pseudonym": self.pseudonyms[number]} if by_pseudonym else {"record_number": number}
        return {**who, "study": hex0x(self.chain.study_id), "action": "grant", "valid_from": 0,
                "valid_until": FAR, "nonce": 0, "deadline": deadline, "signature": hex0x(signed.signature)}


@pytest.fixture
def node(chain, tmp_path):
    return Node(chain, tmp_path / "node")


def _write(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_enrol_reports_each_patient_and_a_second_run_changes_nothing(node):
    missing = node.numbers[-1]
    del node.addresses[missing]
    first = {o.patient: o for o in node.enrol(node.numbers + ["NOPE-1"])}
    assert [first[n].outcome for n in node.numbers[:-1]] == ["enrolled"] * 5
    assert first[missing].outcome == "failed" and "no consent address" in first[missing].reason
    assert first["NOPE-1"].outcome == "failed" and "unknown patient" in first["NOPE-1"].reason
    chain = node.chain
    assert chain.hospital.consent.functions.patientOf(bytes.fromhex(node.pseudonyms[node.numbers[0]][2:])
                                                      ).call()[0] == node.addresses[node.numbers[0]]
    again = node.enrol(node.numbers[:-1])
    assert {o.outcome for o in again} == {"already enrolled"}


def test_enrol_fails_alone_the_patient_another_hospital_took(node):
    taken = node.numbers[2]
    node.chain.other_hospital.enrol([bytes.fromhex(node.pseudonyms[taken][2:])], [Account.create().address])
    outcomes = {o.patient: o for o in node.enrol()}
    assert outcomes[taken].outcome == "failed" and "by hospital" in outcomes[taken].reason
    assert [outcomes[n].outcome for n in node.numbers if n != taken] == ["enrolled"] * 5


def test_a_patient_enrolled_on_chain_by_a_run_that_stopped_reads_already_enrolled(node):
    stopped = node.numbers[1]  # the chain enrolled it, the run stopped before the node wrote the key down
    node.chain.hospital.enrol([bytes.fromhex(node.pseudonyms[stopped][2:])], [node.addresses[stopped]])
    outcomes = {o.patient: o.outcome for o in node.enrol()}
    assert outcomes.pop(stopped) == "already enrolled" and set(outcomes.values()) == {"enrolled"}
    assert {p.record_number: p.consent_key for p in node.store.patients()}[stopped] == node.addresses[stopped]


def test_consent_addresses_file_names_a_bad_line(tmp_path):
    path = tmp_path / "addresses.csv"
    path.write_text("record_number,consent_address\nCLE-1,0x" + "ab" * 20 + "\nCLE-2,not-an-address\n")
    with pytest.raises(bulk.BulkFileError, match="line 3"):
        bulk.read_consent_addresses(path)


def test_a_malformed_line_stops_the_import_before_anything_is_sent(node, tmp_path):
    node.enrol()
    path = _write(tmp_path / "consents.jsonl", [node.grant_line(node.numbers[0]), "{not json",
                                                node.grant_line(node.numbers[1])])
    with pytest.raises(bulk.BulkFileError, match=r"consents.jsonl line 2: not JSON"):
        consent_import.import_consents(path, node.settings, node.chain.hospital)
    pseudonym = bytes.fromhex(node.pseudonyms[node.numbers[0]][2:])
    assert node.chain.hospital.consent_window(pseudonym, node.chain.study_id) == (0, 0)


def test_a_line_nested_too_deep_is_named_not_a_recursion_error(tmp_path):
    path = _write(tmp_path / "c.jsonl", ["[" * 100_000 + "]" * 100_000])  # the FHIR importer's depth attack
    with pytest.raises(bulk.BulkFileError, match=r"c.jsonl line 1: nested more than \d+ levels deep"):
        consent_import.read_signed_consents(path)


@pytest.mark.parametrize("bad", [
    {"action": "grant"},  # no patient
    {"record_number": "X", "pseudonym": "0x" + "00" * 32, "action": "grant"},
    {"record_number": "X", "action": "maybe"},
    {"record_number": "X", "action": "revoke", "nonce": "0", "deadline": 1},
    {"record_number": "X", "action": "revoke", "nonce": 0, "deadline": 1, "study": "0x12", "signature": "0x"},
    [1, 2],
])
def test_each_kind_of_malformed_line_is_named(tmp_path, bad):
    path = _write(tmp_path / "c.jsonl", ["# exported by the paper-consent scanner", "", bad])
    with pytest.raises(bulk.BulkFileError, match=r"c.jsonl line 3: "):
        consent_import.read_signed_consents(path)


def test_good_lines_are_relayed_and_forged_expired_and_foreign_ones_reported(node, tmp_path):
    node.enrol()
    chain, n = node.chain, node.numbers
    stranger = "0x" + secrets.token_hex(32)
    other_registry = dataclasses.replace(chain.deployment, consent_domain_salt="0x" + "11" * 32)
    past = chain.hospital.block_timestamp() - 10
    path = _write(tmp_path / "consents.jsonl", [
        node.grant_line(n[0]),
        node.grant_line(n[1], key=stranger),  # forged: not the patient's key
        node.grant_line(n[2], deadline=past),  # expired
        node.grant_line(n[3], deployment=other_registry),  # signed for another registry's domain
        node.grant_line(n[4], by_pseudonym=True),
        {**node.grant_line(n[5]), "record_number": "NOPE-9"},
    ])
    outcomes = consent_import.import_consents(path, node.settings, chain.hospital, batch=2,
                                              progress=bulk.Progress("relaying", 0, out=io.StringIO()))
    assert [(o.line, o.outcome) for o in outcomes] == [
        (1, "recorded"), (2, "rejected"), (3, "rejected"), (4, "rejected"), (5, "recorded"), (6, "rejected")]
    assert "not the patient's" in outcomes[1].reason and "expired" in outcomes[2].reason
    assert "not the patient's" in outcomes[3].reason and "unknown patient" in outcomes[5].reason
    for i, number in enumerate(n[:5]):
        window = chain.hospital.consent_window(bytes.fromhex(node.pseudonyms[number][2:]), chain.study_id)
        assert window == ((0, FAR) if i in (0, 4) else (0, 0)), number
    report = bulk.write_report(outcomes, tmp_path / "report.csv", consent_import.REPORT_FIELDS)
    assert report.read_text().splitlines()[0] == ",".join(consent_import.REPORT_FIELDS)
    # Importing the same file again sends nothing twice: the chain says the grant was recorded already.
    again = consent_import.import_consents(path, node.settings, chain.hospital,
                                           progress=bulk.Progress("relaying", 0, out=io.StringIO()))
    assert [o.outcome for o in again if o.line in (1, 5)] == ["recorded", "recorded"]


def test_a_line_of_a_patient_not_yet_enrolled_is_reported(node, tmp_path):
    path = _write(tmp_path / "consents.jsonl", [node.grant_line(node.numbers[0])])
    [outcome] = consent_import.import_consents(path, node.settings, node.chain.hospital)
    assert outcome.outcome == "rejected" and "not enrolled" in outcome.reason


def test_the_commands_report_per_patient_and_name_a_malformed_line(node, tmp_path, monkeypatch, capsys):
    from deploy.cli import main
    from node import cli

    monkeypatch.setattr(cli, "_ledger", lambda settings: node.chain.hospital)
    home = str(node.settings.home)
    addresses = tmp_path / "addresses.csv"
    addresses.write_text("record_number,consent_address\n" + "".join(f"{n},{a}\n" for n, a in node.addresses.items()))
    assert main(["node", "enrol", "--home", home, "--addresses", str(addresses), "--all",
                 "--report", str(tmp_path / "enrol.csv")]) == 0
    assert f"enrolment: {len(node.numbers)} enrolled" in capsys.readouterr().out
    assert main(["node", "enrol", "--home", home, "--addresses", str(addresses), node.numbers[0]]) == 0
    assert f"{node.numbers[0]} already enrolled" in capsys.readouterr().out

    broken = _write(tmp_path / "broken.jsonl", [node.grant_line(node.numbers[0]), '{"action": "grant"'])
    assert main(["node", "consent", "import", "--home", home, str(broken)]) == 2
    err = capsys.readouterr().err
    assert "broken.jsonl line 2: not JSON" in err.splitlines()[-1] and "BulkFileError" not in err
    good = _write(tmp_path / "good.jsonl", [node.grant_line(n) for n in node.numbers[:3]]
                  + [node.grant_line(node.numbers[3], deadline=1)])
    assert main(["node", "consent", "import", "--home", home, str(good)]) == 1  # one line expired
    out = capsys.readouterr().out
    assert "line 4" in out and "expired" in out and "3 recorded, 1 rejected" in out
    report = (tmp_path / "good.jsonl.report.csv").read_text().splitlines()
    assert len(report) == 5 and report[1].startswith("1,") and ",recorded," in report[1]
