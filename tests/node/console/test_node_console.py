"""The hospital IT console (node/console): roles, sessions and CSRF, health, imports (CSV and FHIR Bundles, all or
nothing), enrolment codes, privacy budgets per study, the action log, and the pages."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from federation.web import auth
from node import admin
from node.console.app import create_app
from node.console.cli import create_console_token, revoke_console_token
from node.console.settings import ConsoleSettings
from node.records.heart_csv import read_heart_disease_csv
from node.records.heart_fhir_export import bundle_from_records
from node.settings import NodeSettings
from node.store import PrivacySpend, RoundRefusal, RoundUsage, Store

DATA = Path(__file__).resolve().parents[3] / "deploy" / "data" / "heart-disease"
CSV_TYPE = {"Content-Type": "text/csv"}
FHIR_TYPE = {"Content-Type": "application/fhir+json"}


def lines(name: str, count: int) -> str:
    return "\n".join((DATA / f"processed.{name}.data").read_text().splitlines()[:count]) + "\n"


def bundle_text(name: str, count: int, *, prefix: str = "HUN") -> str:
    records = read_heart_disease_csv(DATA / f"processed.{name}.data", record_prefix=prefix)[:count]
    return json.dumps(bundle_from_records(records))


class Console:
    """A node home with a console app and two staff tokens (an it-admin and a viewer)."""

    def __init__(self, home: Path, *, ledger=None, **options):
        self.node = admin.init_node(home, hospital="cleveland", rpc_url="http://127.0.0.1:9", deployment_file=None)
        self.settings = ConsoleSettings.load(home).replace(**options)
        self.admin_token = create_console_token(home, name="ada", role="it-admin")
        self.viewer_token = create_console_token(home, name="vic", role="viewer")
        self.app = create_app(self.settings, ledger=ledger)
        self.store = Store(self.node.resolved_database_url)

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="https://testserver")

    def api(self, token: str | None = None) -> TestClient:
        client = self.client()
        if token:
            client.headers["Authorization"] = f"Bearer {token}"
        return client

    def admin(self) -> TestClient:
        return self.api(self.admin_token)

    def viewer(self) -> TestClient:
        return self.api(self.viewer_token)


@pytest.fixture
def console(tmp_path) -> Console:
    return Console(tmp_path / "node")


def test_tokens_are_bound_to_roles(console):
    for path in ("/api/health", "/api/patients", "/api/studies", "/api/actions", "/api/enrolment-codes", "/api/session"):
        assert console.api().get(path).status_code == 401, path
        assert console.api("tl_wrong").get(path).status_code == 401, path
        assert console.viewer().get(path).status_code == 200, path
        assert console.admin().get(path).status_code == 200, path
    assert console.viewer().get("/api/session").json() == {"name": "vic", "role": "viewer"}
    answer = console.viewer().post("/api/imports", content=lines("cleveland", 5), headers=CSV_TYPE)
    assert answer.status_code == 403 and "needs 'it-admin'" in answer.json()["detail"]
    assert console.viewer().post("/api/enrolment-codes", json={"record_number": "CLE-00001"}).status_code == 403
    assert console.store.patients() == []
    assert revoke_console_token(console.node.home, name="vic")
    assert console.viewer().get("/api/health").status_code == 401


def test_csv_and_fhir_imports_report_and_list_patients(console):
    client = console.admin()
    answer = client.post("/api/imports?filename=cleveland.csv", content=lines("cleveland", 12), headers=CSV_TYPE)
    assert answer.status_code == 201, answer.text
    assert answer.json() | {"cohorts": None} == {"source": "cleveland.csv", "format": "csv", "imported": 12,
                                                 "incomplete": 0, "already_present": 0, "updated": 0,
                                                 "rejected": 0, "skipped": {}, "patients": [], "cohorts": None}
    answer = client.post("/api/imports?filename=hungary.json", content=bundle_text("hungarian", 8), headers=FHIR_TYPE)
    assert answer.status_code == 201, answer.text
    assert answer.json()["format"] == "fhir" and answer.json()["imported"] == 8
    again = client.post("/api/imports?filename=hungary.json", content=bundle_text("hungarian", 8), headers=FHIR_TYPE)
    assert again.json()["imported"] == 0 and again.json()["already_present"] == 8
    page = client.get("/api/patients?limit=500").json()
    assert page["total"] == 20
    numbers = [p["record_number"] for p in page["patients"]]
    assert numbers[:2] == ["CLE-00001", "CLE-00002"] and "HUN-00001" in numbers
    assert {p["source"] for p in page["patients"]} == {"cleveland.csv", "hungary.json"}
    assert "clinical" not in page["patients"][0]
    assert client.get("/api/patients?cohort=incomplete").json()["total"] == sum(
        p["cohort"] == "incomplete" for p in page["patients"])
    # Prefixes apply to records without their own number; the upload's name is kept only as a safe file name.
    answer = client.post("/api/imports?filename=../../etc/va.csv&record_prefix=VAX", content=lines("va", 3),
                         headers=CSV_TYPE)
    assert answer.json()["source"] == "va.csv"
    assert "VAX-00001" in {p.record_number for p in console.store.patients()}
    # Twins' data goes through the same importer choice as `twinledger node import`.
    twins = "patient_id,time,cgm_mgdl\nP-001,2026-01-05T07:00:00Z,132\nP-001,2026-01-05T07:05:00Z,135\n"
    answer = client.post("/api/imports?filename=twins.csv", content=twins, headers=CSV_TYPE)
    assert answer.status_code == 201 and answer.json()["imported"] == 1, answer.text
    kinds = {p["record_number"]: p["kind"] for p in client.get("/api/patients?limit=500").json()["patients"]}
    assert kinds["P-001"] == "diabetes" and kinds["CLE-00001"] == "heart-disease"


def test_bad_uploads_are_refused_with_the_reason_and_nothing_is_written(console):
    client = console.admin()
    bad_csv = lines("cleveland", 3) + "63,1,9,145,233,1,2,150,0,2.3,3,0,6,0\n"
    answer = client.post("/api/imports?filename=bad.csv", content=bad_csv, headers=CSV_TYPE)
    assert answer.status_code == 422
    assert answer.json()["detail"] == "bad.csv: 1 problem(s), nothing imported:\n  line 4: cp = 9 is outside [1, 4]"
    document = json.loads(bundle_text("hungarian", 2))
    document["entry"][2]["resource"]["valueQuantity"]["code"] = "kPa"  # entry 3: trestbps
    answer = client.post("/api/imports?filename=b.json", content=json.dumps(document), headers=FHIR_TYPE)
    assert answer.status_code == 422 and "entry 3 (Observation" in answer.json()["detail"]
    assert "unit http://unitsofmeasure.org|kPa is not accepted" in answer.json()["detail"]
    answer = client.post("/api/imports", content="{not json", headers=FHIR_TYPE)
    assert answer.status_code == 422 and "not valid JSON" in answer.json()["detail"]
    answer = client.post("/api/imports", content=b"\x00\xff", headers={"Content-Type": "application/pdf"})
    assert answer.status_code == 415 and "not 'application/pdf'" in answer.json()["detail"]
    assert client.post("/api/imports", content="", headers=CSV_TYPE).status_code == 422
    assert client.post("/api/imports?record_prefix=bad-prefix", content="1", headers=CSV_TYPE).status_code == 422
    assert console.store.patients() == []
    small = Console(console.node.home.parent / "small", max_upload_bytes=1024)
    answer = small.admin().post("/api/imports", content=lines("cleveland", 100), headers=CSV_TYPE)
    assert answer.status_code == 413
    assert small.store.patients() == [] and not list(small.node.home.glob(".import-*"))


def test_enrolment_codes_are_issued_once_listed_and_logged(console):
    client = console.admin()
    client.post("/api/imports", content=lines("cleveland", 4), headers=CSV_TYPE)
    answer = client.post("/api/enrolment-codes", json={"record_number": "CLE-00002"})
    assert answer.status_code == 201
    assert re.fullmatch(r"([A-Z2-9]{5}-){3}[A-Z2-9]{5}", answer.json()["code"])
    outstanding = console.viewer().get("/api/enrolment-codes").json()
    assert [c["record_number"] for c in outstanding] == ["CLE-00002"] and "code" not in outstanding[0]
    missing = client.post("/api/enrolment-codes", json={"record_number": "CLE-99999"})
    assert missing.status_code == 404 and "no patient with record number 'CLE-99999'" in missing.json()["detail"]
    assert client.post("/api/enrolment-codes", json={"record_number": ""}).status_code == 422
    assert client.post("/api/enrolment-codes", json={"record_number": "x", "extra": 1}).status_code == 422
    log = console.viewer().get("/api/actions").json()
    issued = [(a["actor"], a["role"], a["action"], a["target"], a["outcome"]) for a in log if a["action"].startswith("enrol")]
    assert issued == [("ada", "it-admin", "enrolment-code.issue", "CLE-99999", "refused"),
                      ("ada", "it-admin", "enrolment-code.issue", "CLE-00002", "ok")]
    assert any(a["action"] == "records.import" and a["actor"] == "ada" and "4 imported" in a["detail"] for a in log)


def test_browser_sessions_need_the_csrf_token_and_logins_are_rate_limited(console):
    client = console.client()
    assert client.post("/api/session", json={"token": "tl_nope"}).status_code == 401
    opened = client.post("/api/session", json={"token": console.admin_token})
    assert opened.status_code == 201 and opened.json()["role"] == "it-admin"
    cookie = client.cookies.get(console.settings.cookie_name)
    assert cookie and cookie != console.admin_token
    assert "httponly" in opened.headers["set-cookie"].lower() and "samesite=strict" in opened.headers["set-cookie"].lower()
    answer = client.post("/api/imports", content=lines("cleveland", 3), headers=CSV_TYPE)
    assert answer.status_code == 403 and "CSRF" in answer.json()["detail"]
    csrf = {"X-CSRF-Token": opened.json()["csrf_token"]}
    assert client.post("/api/imports", content=lines("cleveland", 3), headers=CSV_TYPE | csrf).status_code == 201
    assert client.delete("/api/session", headers=csrf).status_code == 200
    assert client.get("/api/health").status_code == 401
    limited = Console(console.node.home.parent / "limited", max_login_failures_per_ip=3)
    other = limited.client()
    for _ in range(3):
        assert other.post("/api/session", json={"token": "tl_guess"}).status_code == 401
    answer = other.post("/api/session", json={"token": limited.admin_token})
    assert answer.status_code == 429 and "Retry-After" in answer.headers
    failures = [a for a in limited.admin().get("/api/actions").json() if a["action"] == "login"]
    assert [a["outcome"] for a in failures] == ["refused"] * 3 and failures[0]["actor"] == "anonymous"


def test_health_without_chain_or_superlink_says_what_is_wrong(console, tmp_path):
    health = console.viewer().get("/api/health").json()
    assert health["ok"] is False and health["hospital"] == "cleveland"
    assert health["chain"]["ok"] is False and "cannot be reached" in health["chain"]["detail"]
    assert health["superlink"]["ok"] is False and "no SuperLink address configured" in health["superlink"]["detail"]
    assert health["database"]["ok"] and health["keys"]["ok"] and health["last_round"] is None
    console.node.data_key_file.chmod(0o644)
    health = console.viewer().get("/api/health").json()
    assert health["keys"]["ok"] is False and "readable by others" in health["keys"]["detail"]


def test_health_with_a_chain_a_superlink_and_a_round(chain, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        console = Console(tmp_path / "node", ledger=chain.hospital, superlink=address)
        console.store.record_usage(RoundUsage(study_id=str(chain.study_id), round=2, phase="evaluate", block=7,
                                              commitment="0x00", pseudonyms=json.dumps(["0x01", "0x02"])))
        health = console.viewer().get("/api/health").json()
    assert health["chain"]["ok"] and health["chain"]["latest_block"] == chain.w3.eth.block_number
    assert health["chain"]["hospital_account"] == chain.hospital.address
    assert health["superlink"]["ok"] and health["superlink"]["address"] == address
    assert health["ok"] is True
    assert health["last_round"] | {"recorded_at": None} == {
        "study_id": str(chain.study_id), "round": 2, "phase": "evaluate", "block": 7, "patients_used": 2,
        "recorded_at": None}
    closed = Console(tmp_path / "other", ledger=chain.hospital, superlink=address)  # the listener is closed now
    answer = closed.viewer().get("/api/health").json()["superlink"]
    assert answer["ok"] is False and f"no TCP connection to {address}" in answer["detail"]


def test_budget_per_accepted_study(chain, tmp_path):
    from node.privacy import epsilon_of

    console = Console(tmp_path / "node", ledger=chain.hospital)
    study = str(chain.study_id)
    out = console.viewer().get("/api/studies").json()
    assert out["chain_ok"] and [s["study_id"] for s in out["studies"]] == [study]
    first = out["studies"][0]
    assert first["accepted"] is True and first["live"] is True and first["epsilon_budget"] == 3.0
    assert first["epsilon_spent"] == 0 and first["rounds_allowed"] == 5 and first["rounds_contributed"] == 0
    history = [(1.1, 0.25, 8), (1.1, 0.25, 8)]
    console.store.record_spend([PrivacySpend(study_id=study, round=r + 1, noise_multiplier=s, sample_rate=q, steps=n,
                                             delta=1e-5, epsilon_after=0.0) for r, (s, q, n) in enumerate(history)])
    for phase in ("train", "evaluate"):
        console.store.record_usage(RoundUsage(study_id=study, round=1, phase=phase, block=3, commitment="0x00",
                                              pseudonyms="[]"))
    first = console.viewer().get("/api/studies").json()["studies"][0]
    assert first["epsilon_spent"] == pytest.approx(epsilon_of(history, delta=1e-5))
    assert first["rounds_contributed"] == 1 and first["rounds_evaluated"] == 1
    # Without the chain the node's own accounts are still shown.
    offline = Console(tmp_path / "offline")
    offline.store.record_spend([PrivacySpend(study_id=study, round=1, noise_multiplier=1.1, sample_rate=0.25, steps=8,
                                             delta=1e-5, epsilon_after=0.42)])
    out = offline.viewer().get("/api/studies").json()
    assert out["chain_ok"] is False and out["studies"][0]["epsilon_spent"] == 0.42
    assert out["studies"][0]["accepted"] is None and out["studies"][0]["epsilon_budget"] is None


def test_budget_counts_only_completed_uses_and_shows_reads_a_stopped_node_never_completed(chain, tmp_path):
    """The write-ahead usage log (issue 15) holds intents and voided reads too. As the audit reads it: a completed
    entry is a use; an intent left by a node that stopped is a read whose reply was never sent, shown apart; a
    voided read (the node refused after reading: nothing trained or released) is no use at all."""
    from node.store import USAGE_INTENT, USAGE_VOIDED

    console = Console(tmp_path / "node", ledger=chain.hospital)
    study = str(chain.study_id)
    entries = [(1, "train", None), (1, "evaluate", None), (2, "train", USAGE_INTENT), (3, "train", USAGE_VOIDED),
               (3, "evaluate", USAGE_VOIDED), (4, "evaluate", USAGE_INTENT)]
    for round_number, phase, status in entries:
        usage = RoundUsage(study_id=study, round=round_number, phase=phase, block=3, commitment="0x00",
                           pseudonyms="[]")
        if status is None:
            console.store.record_usage(usage)
            continue
        intent = console.store.record_intent(usage)
        if status == USAGE_VOIDED:
            console.store.settle_usage(intent, status=USAGE_VOIDED)
    first = console.viewer().get("/api/studies").json()["studies"][0]
    assert (first["rounds_contributed"], first["rounds_evaluated"]) == (1, 1)
    assert first["reads_not_completed"] == [{"round": 2, "phase": "train"}, {"round": 4, "phase": "evaluate"}]
    client = console.client()
    form_token = re.search(r'name="form_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"form_token": form_token, "token": console.viewer_token})
    page = client.get("/studies").text
    assert "1 trained of 5 allowed, 1 evaluated" in page
    assert "Read, reply not sent" in page and "round 2 training" in page and "round 4 evaluation" in page


def test_pages_log_in_show_the_node_and_keep_viewers_to_looking(console):
    client = console.client()
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    page = client.get("/login")
    assert page.status_code == 200 and 'label for="token"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    form_token = re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)
    wrong = client.post("/login", data={"form_token": form_token, "token": "tl_wrong"})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
    stale = client.post("/login", data={"form_token": "forged", "token": console.viewer_token})
    assert stale.status_code == 403
    answer = client.post("/login", data={"form_token": form_token, "token": console.viewer_token}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    for path, text in (("/", "Last round"), ("/patients", "Patients (0)"), ("/enrolment", "Outstanding codes"),
                       ("/studies", "Studies and privacy budget"), ("/actions", "login")):
        page = client.get(path)
        assert page.status_code == 200 and text in page.text, path
    assert 'id="import-form"' not in client.get("/patients").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/enrolment").text).group(1)
    refused = client.post("/enrolment", data={"csrf_token": csrf, "record_number": "CLE-00001"})
    assert refused.status_code == 403 and "only an it-admin" in refused.text
    assert client.get("/patients?page=abc").status_code == 422
    assert client.get("/static/web.css").status_code == 200 and client.get("/static/console.js").status_code == 200


def test_an_it_admin_issues_a_code_on_the_page(console):
    console.admin().post("/api/imports", content=lines("cleveland", 3), headers=CSV_TYPE)
    client = console.client()
    form_token = re.search(r'name="form_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"form_token": form_token, "token": console.admin_token})
    page = client.get("/patients")
    assert 'id="import-form"' in page.text and "CLE-00003" in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert client.post("/enrolment", data={"csrf_token": "wrong", "record_number": "CLE-00001"}).status_code == 403
    issued = client.post("/enrolment", data={"csrf_token": csrf, "record_number": "CLE-00001"})
    assert issued.status_code == 201 and 'id="issued-code"' in issued.text
    again = client.post("/enrolment", data={"csrf_token": csrf, "record_number": ""})
    assert again.status_code == 422 and "type the patient" in again.text
    assert client.post("/enrolment", content=b"{}", headers={"Content-Type": "application/json"}).status_code == 415


def test_token_names_and_roles_are_checked(tmp_path):
    console = Console(tmp_path / "node")
    with pytest.raises(auth.TokenError, match="unknown role"):
        create_console_token(console.node.home, name="eve", role="root")
    with pytest.raises(auth.TokenError, match="exists already"):
        create_console_token(console.node.home, name="ada", role="viewer")


def test_refusals_the_node_recorded_are_counted_per_study(console):
    study = "0x" + "ab" * 32
    console.store.record_usage(RoundUsage(study_id=study, round=1, phase="train", block=1, commitment="0x00",
                                          pseudonyms="[]"))
    assert console.viewer().get("/api/studies").json()["studies"][0]["refusals"] == 0
    for round_number, code in ((2, 4004), (3, 4005)):
        console.store.record_refusal(RoundRefusal(study_id=study, round=round_number, phase="train", code=code,
                                                  reason="no data used"))
    console.store.record_refusal(RoundRefusal(study_id="0x" + "cd" * 32, round=1, phase="train", code=4001,
                                              reason="another study"))
    assert console.viewer().get("/api/studies").json()["studies"][0]["refusals"] == 2


def test_the_node_cli_commands(tmp_path, capsys):
    import argparse

    from node.console.cli import add_node_console_commands

    admin.init_node(tmp_path / "node", hospital="va", rpc_url="http://127.0.0.1:9", deployment_file=None)
    parser = argparse.ArgumentParser(prog="twinledger node")
    add_node_console_commands(parser.add_subparsers(dest="action", required=True))
    args = parser.parse_args(["console-token", "--home", str(tmp_path / "node"), "--name", "ivy", "--role", "it-admin"])
    assert args.func(args) == 0
    token = capsys.readouterr().out.split()[0]
    with Store(NodeSettings.load(tmp_path / "node").resolved_database_url).session() as db:
        assert auth.token_holder(db, token).role == "it-admin"
    args = parser.parse_args(["console-token", "--home", str(tmp_path / "node"), "--name", "ivy", "--revoke"])
    assert args.func(args) == 0 and "revoked" in capsys.readouterr().out
    args = parser.parse_args(["console", "--home", "h", "--port", "8123", "--superlink", "10.0.0.5:9092"])
    assert (args.port, args.host, args.superlink) == (8123, "127.0.0.1", "10.0.0.5:9092")
    with pytest.raises(SystemExit):
        parser.parse_args(["console-token", "--home", "h", "--name", "x", "--role", "root"])


def test_a_record_imported_again_with_new_values_is_reported_as_updated_never_silently_kept(console):
    client = console.admin()
    assert client.post("/api/imports?filename=c.csv", content=lines("cleveland", 3), headers=CSV_TYPE).status_code == 201
    rows = lines("cleveland", 3).splitlines()
    fields = rows[0].split(",")
    fields[4] = str(float(fields[4]) + 10)  # the first patient's cholesterol changed in the EHR
    rows[0] = ",".join(fields)
    answer = client.post("/api/imports?filename=c.csv", content="\n".join(rows) + "\n", headers=CSV_TYPE)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["updated"], body["already_present"], body["imported"]) == (1, 2, 0)
    assert [(p["record_number"], p["outcome"]) for p in body["patients"]] == [("CLE-00001", "updated")]
    assert "chol" in " ".join(body["patients"][0]["reasons"])
    assert "CLE-00001 updated" in client.get("/api/actions").text
