"""The operator console (coordinator/console): role tokens, sessions and CSRF, the action log, studies on
chain, launching, watching and stopping runs (with a stand-in `flwr`: these tests are about the console,
tests/test_console_browser.py runs real Flower) and downloads."""

from __future__ import annotations

import socket
import stat
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from coordinator.console.app import create_app
from coordinator.console.settings import ConsoleSettings
from coordinator.settings import CoordinatorSettings
from federation.ids import StudyId
from federation.web import auth
from federation.web.models import AccessToken

# `flwr run APP FED --stream --run-config "..."` writes a report the way the ServerApp does, round by round;
# FAKE_FLWR_MODE=hang keeps the run going until `flwr stop`; `flwr stop ID FED` answers as Flower does.
FAKE_FLWR = r'''
import json, os, pathlib, re, sys, time
args = sys.argv[1:]
if args[0] == "stop":
    pathlib.Path(os.environ["FLWR_HOME"], "stopped").write_text(args[1])
    print(f"Run {args[1]} stopped.")
    sys.exit(0)
config = dict((k, v.strip('"')) for k, v in re.findall(r'([\w-]+)=("[^"]*"|\S+)', args[args.index("--run-config") + 1]))
run_dir = pathlib.Path(config["coordinator-home"]) / "runs" / config["run-name"]
print("Successfully started run 17000000000000004242", flush=True)  # Flower's ids are uint64
report = {"status": "running", "message": "", "study": {"id": config["study-id"], "purpose": "HRESCH",
          "task": "heart-disease/v1", "epsilon_budget": 3.0, "delta": 1e-05, "rounds": 5},
          "hospitals": [{"name": "cleveland", "account": "0x" + "11" * 20, "patients": 303, "consented": 270,
                         "epsilon_spent": 0.0, "epsilon_budget": 3.0}], "rounds": []}
def save():
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / "report.tmp"
    tmp.write_text(json.dumps(report))
    tmp.replace(run_dir / "report.json")
save()
if os.environ.get("FAKE_FLWR_MODE") == "hang":
    time.sleep(120)
    sys.exit(0)
for r in range(1, int(config["num-rounds"]) + 1):
    time.sleep(0.2)
    report["hospitals"][0]["epsilon_spent"] = 0.9 * r
    report["rounds"].append({"round": r, "block": 10 + r, "accuracy": 0.6 + 0.1 * r, "loss": 0.7 - 0.1 * r,
                             "metrics": {"accuracy": 0.6 + 0.1 * r, "auc": 0.7 + 0.05 * r},
                             "used": {"cleveland": 270}, "test_used": {"cleveland": 60},
                             "epsilon": {"cleveland": 0.9 * r}, "errors": {}, "status": "done", "anchor_block": 20 + r})
    save()
report["status"] = "finished"
save()
(run_dir / "model.pt").write_bytes(b"stand-in weights")
'''


def write_fake_flwr(directory: Path) -> Path:
    path = directory / "flwr"
    path.write_text(f"#!{sys.executable}\n{FAKE_FLWR}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


class FakeSuperLink:
    """A listening socket, so that the console's 'does the SuperLink answer' check passes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        self.sock.close()


def console_settings(home: Path, *, superlink: str, flwr: Path | None = None) -> ConsoleSettings:
    coordinator = CoordinatorSettings(home=home.resolve(), rpc_url="http://unused.invalid",
                                      deployment_file=home / "deployment.json")
    coordinator.save()
    extra = {"flwr_executable": flwr} if flwr else {}
    ca = home / "ca.pem"  # the fake flwr never opens it: the console only names it in flwr's config
    ca.parent.mkdir(parents=True, exist_ok=True)
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    return ConsoleSettings(coordinator=coordinator, superlink=superlink, root_certificates=ca, **extra)


class Console:
    def __init__(self, chain, home: Path, superlink: str):
        self.chain = chain
        self.settings = console_settings(home, superlink=superlink, flwr=write_fake_flwr(home.parent))
        self.app = create_app(self.settings, reader=chain.coordinator, operator=chain.operator)
        self.state = self.app.state.console
        with self.db() as db:
            self.tokens = {name: auth.create_token(db, name=name, role=role, roles=("operator", "observer"))
                           for name, role in (("olivia", "operator"), ("oscar", "observer"))}

    def db(self) -> Session:
        return self.state.session()

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="https://testserver")

    def bearer(self, name: str) -> dict:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def log(self) -> list[dict]:
        with self.db() as db:
            return [e.model_dump() for e in auth.activity(db)]


def study_body(**changes) -> dict:
    body = {"purpose": "HRESCH", "task_id": "heart-disease/v1", "data_categories": ["demographics", "ecg"],
            "epsilon_budget": 2.5, "delta_exponent": 6, "rounds": 3,
            "ends_on": (date.today() + timedelta(days=30)).isoformat()}
    return {**body, **changes}


@pytest.fixture
def superlink():
    link = FakeSuperLink()
    yield link.address
    link.close()


@pytest.fixture
def console(chain, tmp_path, superlink):
    return Console(chain, tmp_path / "coordinator", superlink)


def wait_for(client: TestClient, headers: dict, name: str, statuses: tuple[str, ...], timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        run = client.get(f"/api/runs/{name}", headers=headers).json()
        if run["status"] in statuses or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def test_tokens_are_stored_hashed_and_bound_to_a_role(console):
    with console.db() as db:
        rows = db.exec(select(AccessToken)).all()
    assert {r.name: r.role for r in rows} == {"olivia": "operator", "oscar": "observer"}
    for row in rows:
        assert console.tokens[row.name] not in row.token_hash and row.token_hash == auth.hash_token(console.tokens[row.name])
    client = console.client()
    assert client.get("/api/me", headers=console.bearer("oscar")).json() == {"name": "oscar", "role": "observer",
                                                                             "can_operate": False}
    assert client.get("/api/me").status_code == 401
    assert client.get("/api/me", headers={"Authorization": "Bearer tl_wrong"}).status_code == 401
    with console.db() as db, pytest.raises(auth.TokenError):
        auth.create_token(db, name="olivia", role="operator")


def test_cli_token_command_prints_a_working_token(tmp_path, capsys):
    import argparse

    from coordinator.console.cli import add_console_commands

    console_settings(tmp_path / "home", superlink="127.0.0.1:1")
    parser = argparse.ArgumentParser()
    add_console_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["console", "token", "--home", str(tmp_path / "home"), "--name", "alice", "--role", "observer"])
    assert args.func(args) == 0
    token = capsys.readouterr().out.split()[0]
    settings = ConsoleSettings.load(tmp_path / "home")
    client = TestClient(create_app(settings), base_url="https://testserver")
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()["name"] == "alice"
    with pytest.raises(SystemExit):
        parser.parse_args(["console", "token", "--home", "h", "--name", "x", "--role", "admin"])


def test_login_gives_an_httponly_strict_cookie_and_posts_need_the_csrf_token(console):
    client = console.client()
    bad = client.post("/api/session", json={"token": "tl_not-a-token"})
    assert bad.status_code == 401 and "not valid" in bad.json()["detail"]
    answer = client.post("/api/session", json={"token": console.tokens["olivia"]})
    assert answer.status_code == 201
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
    csrf = answer.json()["csrf_token"]
    refused = client.post("/api/studies", json=study_body())
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    created = client.post("/api/studies", json=study_body(), headers={"X-CSRF-Token": csrf})
    assert created.status_code == 201, created.text
    assert client.delete("/api/session", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.get("/api/me").status_code == 401
    log = console.log()
    assert any(e["action"] == "login" and e["outcome"] == "failed" and e["actor"] == "anonymous" for e in log)
    assert any(e["action"] == "login" and e["outcome"] == "ok" and e["actor"] == "olivia" for e in log)


def test_failed_logins_are_rate_limited_per_address(console):
    client = console.client()
    for _ in range(console.settings.max_login_failures_per_client):
        assert client.post("/api/session", json={"token": "tl_guess"}).status_code == 401
    blocked = client.post("/api/session", json={"token": console.tokens["olivia"]})
    assert blocked.status_code == 429 and "too many" in blocked.json()["detail"]


def test_operator_creates_a_study_on_chain_and_sees_who_accepted_it(console):
    client = console.client()
    created = client.post("/api/studies", json=study_body(), headers=console.bearer("olivia"))
    assert created.status_code == 201, created.text
    study_id = created.json()["study_id"]
    terms = console.chain.operator.study(StudyId.parse(study_id))
    assert (terms.purpose, terms.task_id, terms.epsilon_budget, terms.delta, terms.rounds) == \
        ("HRESCH", "heart-disease/v1", 2.5, 1e-6, 3)
    console.chain.hospital.accept_study(StudyId.parse(study_id))
    listed = client.get("/api/studies", headers=console.bearer("oscar")).json()
    mine = next(s for s in listed if s["study_id"] == study_id)
    assert mine["data_categories"] == ["demographics", "ecg"]
    assert [a["account"] for a in mine["accepted_by"]] == [console.chain.hospital.address]
    assert str(console.chain.study_id) in {s["study_id"] for s in listed}
    one = client.get(f"/api/studies/{study_id}", headers=console.bearer("oscar"))
    assert one.status_code == 200 and one.json()["rounds"] == 3
    entry = console.log()[0]
    assert (entry["actor"], entry["action"], entry["target"], entry["outcome"]) == ("olivia", "study.create", study_id, "ok")


def test_an_observer_can_watch_but_not_act_and_the_refusal_is_logged(console):
    client = console.client()
    assert client.get("/api/studies", headers=console.bearer("oscar")).status_code == 200
    refused = client.post("/api/studies", json=study_body(), headers=console.bearer("oscar"))
    assert refused.status_code == 403 and "operator" in refused.json()["detail"]
    run = {"study_id": str(console.chain.study_id), "name": "r1", "rounds": 1}
    assert client.post("/api/runs", json=run, headers=console.bearer("oscar")).status_code == 403
    refusals = [e for e in console.log() if e["outcome"] == "refused"]
    assert len(refusals) == 2 and all(e["actor"] == "oscar" for e in refusals)


def test_bad_study_terms_get_clear_4xx_answers(console):
    client, olivia = console.client(), console.bearer("olivia")
    past = client.post("/api/studies", json=study_body(ends_on="2020-01-01"), headers=olivia)
    assert past.status_code == 422 and "not in the future" in past.json()["detail"]
    task = client.post("/api/studies", json=study_body(task_id="nope/v9"), headers=olivia)
    assert task.status_code == 422 and "unknown task" in task.json()["detail"]
    mismatch = client.post("/api/studies", json=study_body(purpose="BIORCH"), headers=olivia)
    assert mismatch.status_code == 422 and "serves the purpose HRESCH" in mismatch.json()["detail"]
    assert client.post("/api/studies", json=study_body(epsilon_budget=0), headers=olivia).status_code == 422
    assert client.post("/api/studies", json=study_body(purpose="HMARKT"), headers=olivia).status_code == 422
    assert client.post("/api/studies", json={**study_body(), "extra": 1}, headers=olivia).status_code == 422
    assert client.get("/api/studies/0x" + "ab" * 32, headers=olivia).status_code == 404
    assert client.get("/api/studies/not-an-id", headers=olivia).status_code == 422
    failed = [e for e in console.log() if e["action"] == "study.create"]
    assert len(failed) == 3 and all(e["outcome"] == "failed" for e in failed)


def test_a_run_is_launched_watched_to_its_end_and_its_files_downloaded(console):
    client, olivia = console.client(), console.bearer("olivia")
    body = {"study_id": str(console.chain.study_id), "name": "trial-1", "rounds": 2, "min_nodes": 1,
            "local_epochs": 1}
    launched = client.post("/api/runs", json=body, headers=olivia)
    assert launched.status_code == 201, launched.text
    assert launched.json()["status"] in ("starting", "running")
    run = wait_for(client, console.bearer("oscar"), "trial-1", ("finished", "failed"))
    assert run["status"] == "finished", run
    assert run["flwr_run_id"] == "17000000000000004242" and run["rounds_done"] == 2
    assert run["rounds"][1]["metrics"] == {"accuracy": pytest.approx(0.8), "auc": pytest.approx(0.8),
                                           "loss": pytest.approx(0.5)}  # the report's own loss joins its metrics
    assert run["rounds"][0]["used"] == {"cleveland": 270} and run["rounds"][1]["epsilon"] == {"cleveland": 1.8}
    assert run["hospitals"][0]["epsilon_spent"] == pytest.approx(1.8)
    deadline = time.monotonic() + 10  # like the ServerApp, the stand-in saves the model just after "finished"
    while not client.get("/api/runs/trial-1", headers=olivia).json()["files"]["model"] and time.monotonic() < deadline:
        time.sleep(0.1)
    log = (console.settings.runs_dir / "trial-1" / "flwr-run.log").read_text()
    assert "Successfully started run 17000000000000004242" in log
    model = client.get("/api/runs/trial-1/files/model.pt", headers=olivia)
    assert model.status_code == 200 and model.content == b"stand-in weights"
    report = client.get("/api/runs/trial-1/files/report.json", headers=olivia)
    assert report.json()["status"] == "finished"
    page = client.get("/api/runs/trial-1/files/report.html", headers=olivia)
    assert page.status_code == 200 and "TwinLedger run report" in page.text
    assert "script-src" not in page.headers["content-security-policy"]
    plot = client.get("/api/runs/trial-1/files/report-plots/accuracy.png", headers=olivia)
    assert plot.status_code == 200 and plot.content[:4] == b"\x89PNG"
    listed = client.get("/api/runs", headers=olivia).json()
    assert [(r["name"], r["status"], r["launched_by"]) for r in listed] == [("trial-1", "finished", "olivia")]
    again = client.post("/api/runs", json=body, headers=olivia)
    assert again.status_code == 409 and "exists already" in again.json()["detail"]
    actions = [(e["action"], e["target"], e["outcome"]) for e in console.log()]
    assert ("run.launch", "trial-1", "ok") in actions and ("run.launch", "trial-1", "failed") in actions
    assert {("download", f"trial-1/{f}", "ok") for f in ("model.pt", "report.json", "report.html")} <= set(actions)


def test_a_run_is_stopped_with_flwr_stop_and_says_stopped(console, monkeypatch):
    monkeypatch.setenv("FAKE_FLWR_MODE", "hang")
    client, olivia = console.client(), console.bearer("olivia")
    body = {"study_id": str(console.chain.study_id), "name": "long", "rounds": 5}
    assert client.post("/api/runs", json=body, headers=olivia).status_code == 201
    assert wait_for(client, olivia, "long", ("running",))["status"] == "running"
    assert client.post("/api/runs/long/stop", headers=console.bearer("oscar")).status_code == 403
    deadline = time.monotonic() + 10
    while client.get("/api/runs/long", headers=olivia).json()["flwr_run_id"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped = client.post("/api/runs/long/stop", headers=olivia)
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "stopped" and stopped.json()["stopped_by"] == "olivia"
    assert (console.settings.flwr_home / "stopped").read_text() == "17000000000000004242"
    assert client.post("/api/runs/long/stop", headers=olivia).status_code == 409
    entry = next(e for e in console.log() if e["action"] == "run.stop" and e["outcome"] == "ok")
    assert entry["actor"] == "olivia" and entry["target"] == "long"


def test_bad_run_requests_get_clear_4xx_answers(console, tmp_path):
    client, olivia = console.client(), console.bearer("olivia")
    study = str(console.chain.study_id)
    too_many = client.post("/api/runs", json={"study_id": study, "name": "x", "rounds": 6}, headers=olivia)
    assert too_many.status_code == 422 and "allows 5" in too_many.json()["detail"]
    unknown = client.post("/api/runs", json={"study_id": "0x" + "cd" * 32, "name": "x", "rounds": 1}, headers=olivia)
    assert unknown.status_code == 404
    assert client.post("/api/runs", json={"study_id": study, "name": "../etc", "rounds": 1}, headers=olivia).status_code == 422
    assert client.get("/api/runs/nope", headers=olivia).status_code == 404
    assert client.get("/api/runs/Bad..Name", headers=olivia).status_code == 422
    assert client.get("/api/runs/nope/files/secrets.txt", headers=olivia).status_code == 422
    assert client.get("/api/activity?limit=0", headers=olivia).status_code == 422
    # no SuperLink listening: a clear refusal, no run recorded
    settings = console_settings(tmp_path / "other", superlink="127.0.0.1:9", flwr=console.settings.flwr_executable)
    other = TestClient(create_app(settings, reader=console.chain.coordinator), base_url="https://testserver")
    with Session(other.app.state.console.engine) as db:
        token = auth.create_token(db, name="olivia", role="operator")
    down = other.post("/api/runs", json={"study_id": study, "name": "x", "rounds": 1},
                      headers={"Authorization": f"Bearer {token}"})
    assert down.status_code == 409 and "does not answer" in down.json()["detail"]


def test_pages_log_in_with_the_form_and_refuse_forms_without_the_csrf_token(console):
    client = console.client()
    assert client.get("/studies", follow_redirects=False).headers["location"] == "/login"
    login_page = client.get("/login")
    assert "default-src 'self'" in login_page.headers["content-security-policy"]
    form_token = client.cookies.get("twinledger_console_form")
    no_token = client.post("/login", data={"token": console.tokens["olivia"], "csrf_token": "forged"})
    assert no_token.status_code == 403
    answer = client.post("/login", data={"token": console.tokens["olivia"], "csrf_token": form_token},
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/studies"
    page = client.get("/studies")
    assert page.status_code == 200 and "Create a study" in page.text and "<script" not in page.text
    forged = client.post("/studies", data={**study_body(), "csrf_token": "forged"})
    assert forged.status_code == 403
    for path in ("/runs", "/activity"):
        assert client.get(path).status_code == 200
    assert client.get("/runs/nope").status_code == 404


def test_a_run_against_a_superlink_whose_ca_is_unknown_is_refused_with_a_reason_not_a_500(console):
    settings = console.settings.model_copy(update={"root_certificates": None})
    app = create_app(settings, reader=console.chain.coordinator, operator=console.chain.operator)
    client, olivia = TestClient(app, base_url="https://testserver"), console.bearer("olivia")
    body = {"study_id": str(console.chain.study_id), "name": "no-ca", "rounds": 1}
    answer = client.post("/api/runs", json=body, headers=olivia)
    assert answer.status_code == 503
    assert "root-certificates" in answer.json()["detail"]
