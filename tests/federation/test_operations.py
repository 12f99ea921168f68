"""Operating the web apps: /healthz, /readyz (503 naming each failed check, never a 500) and /metrics on the
patient portal, the hospital IT console and the operator console, without a login."""

from __future__ import annotations

import socket
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from coordinator.console.app import create_app as create_operator_console
from coordinator.console.settings import ConsoleSettings as OperatorConsoleSettings
from coordinator.settings import CoordinatorSettings
from federation import protocol
from federation.web.probes import Check, database_writable, key_files, run_checks
from node import admin
from node.consent_gate import Refusal
from node.console.app import create_app as create_node_console
from node.console.settings import ConsoleSettings as NodeConsoleSettings
from node.portal.app import create_app as create_portal
from node.portal.settings import PortalSettings
from tests.node.hospital import fresh_state, hospital  # noqa: F401 - the fixture


@pytest.fixture
def listening():
    """A port that accepts TCP connections (the SuperLink, as far as a readiness check can tell)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"127.0.0.1:{server.getsockname()[1]}"


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def client(app) -> TestClient:
    return TestClient(app, base_url="https://testserver")


def node_home(tmp_path, **options):
    return admin.init_node(tmp_path / "node", hospital="cleveland", rpc_url="http://127.0.0.1:9",
                           deployment_file=None, **options)


def read_only(engine):
    """The same SQLite file opened read-only, as on a read-only volume (the tests run as root, which chmod
    does not stop)."""
    return create_engine(f"sqlite:///file:{engine.url.database}?mode=ro&uri=true")


def node_console(tmp_path, *, superlink: str, ledger=None):
    node_home(tmp_path)
    settings = NodeConsoleSettings.load(tmp_path / "node").replace(superlink=superlink)
    return create_node_console(settings, ledger=ledger)


def portal(tmp_path, *, ledger=None):
    return create_portal(PortalSettings(node=node_home(tmp_path)), ledger=ledger)


def operator_console(tmp_path, *, superlink: str, reader=None):
    home = tmp_path / "coordinator"
    coordinator = CoordinatorSettings(home=home.resolve(), rpc_url="http://127.0.0.1:9",
                                      deployment_file=home / "deployment.json")
    coordinator.save()
    return create_operator_console(OperatorConsoleSettings(coordinator=coordinator, superlink=superlink), reader=reader)


# ---- /healthz and /readyz -----------------------------------------------------------------------------------------

def test_every_web_app_says_it_is_alive_without_a_login(tmp_path):
    apps = {"portal": portal(tmp_path / "p"), "node console": node_console(tmp_path / "c", superlink=""),
            "operator console": operator_console(tmp_path / "o", superlink="127.0.0.1:9")}
    for name, app in apps.items():
        answer = client(app).get("/healthz")
        assert answer.status_code == 200 and answer.json() == {"status": "alive"}, name
        assert answer.headers["cache-control"] == "no-store", name  # the kit's headers, as on every answer
        assert "/healthz" not in app.openapi()["paths"] and "/readyz" not in app.openapi()["paths"], name


def test_the_node_console_is_ready_with_the_chain_the_superlink_a_writable_database_and_its_keys(
        tmp_path, in_process_chain, listening):
    app = node_console(tmp_path, superlink=listening, ledger=in_process_chain.hospital)
    answer = client(app).get("/readyz")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ready" and body["failed"] == []
    assert set(body["checks"]) == {"chain", "superlink", "database", "keys"}
    assert "holds the contracts" in body["checks"]["chain"]["detail"]


def test_the_node_console_is_not_ready_without_a_chain_or_a_superlink(tmp_path):
    app = node_console(tmp_path, superlink=closed_port())
    answer = client(app).get("/readyz")
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "not ready" and sorted(body["failed"]) == ["chain", "superlink"]
    assert body["checks"]["database"]["ok"] and body["checks"]["keys"]["ok"]
    assert "no TCP connection" in body["checks"]["superlink"]["detail"]


def test_a_read_only_database_or_a_missing_key_makes_the_node_console_not_ready(tmp_path, in_process_chain, listening):
    app = node_console(tmp_path, superlink=listening, ledger=in_process_chain.hospital)
    state = app.state.console
    state.store.engine = read_only(state.store.engine)
    answer = client(app).get("/readyz")
    assert answer.status_code == 503 and answer.json()["failed"] == ["database"]
    assert "does not accept writes" in answer.json()["checks"]["database"]["detail"]
    state.settings.node.hospital_key_file.unlink()
    answer = client(app).get("/readyz")
    assert answer.status_code == 503 and answer.json()["failed"] == ["database", "keys"]


def test_the_portal_is_ready_with_its_chain_and_not_ready_when_the_chain_is_down(tmp_path, in_process_chain):
    ready = client(portal(tmp_path / "up", ledger=in_process_chain.hospital)).get("/readyz")
    assert ready.status_code == 200 and set(ready.json()["checks"]) == {"chain", "database", "keys"}, ready.text
    down = node_home(tmp_path / "down").replace(deployment_file=tmp_path / "deployment.json", chain_timeout_s=0.2)
    in_process_chain.deployment.save(down.deployment_file)
    answer = client(create_portal(PortalSettings(node=down))).get("/readyz")
    assert answer.status_code == 503 and answer.json()["failed"] == ["chain"], answer.text


def test_the_portal_with_a_read_only_database_is_not_ready(tmp_path, in_process_chain):
    app = portal(tmp_path, ledger=in_process_chain.hospital)
    app.state.portal.store.engine = read_only(app.state.portal.store.engine)
    answer = client(app).get("/readyz")
    assert answer.status_code == 503 and answer.json()["failed"] == ["database"]


def test_the_operator_console_checks_chain_database_key_and_superlink(tmp_path, in_process_chain, listening):
    ready = client(operator_console(tmp_path / "up", superlink=listening, reader=in_process_chain.coordinator))
    body = ready.get("/readyz").json()
    assert body["status"] == "ready", body
    assert "no key" in body["checks"]["keys"]["detail"]  # an observer's console holds no operator key: still ready
    down = client(operator_console(tmp_path / "down", superlink=closed_port())).get("/readyz")
    assert down.status_code == 503 and sorted(down.json()["failed"]) == ["chain", "superlink"]


def test_a_check_that_raises_or_hangs_fails_alone_and_in_time():
    def hangs() -> Check:
        time.sleep(3)
        return Check(True, "too late")

    def raises() -> Check:
        raise RuntimeError("the disk is on fire\nwith a traceback")

    started = time.monotonic()
    results = run_checks(lambda: {"ok": lambda: Check(True, "fine"), "hangs": hangs, "raises": raises}, timeout_s=0.3)
    assert time.monotonic() - started < 2
    assert results["ok"].ok and not results["hangs"].ok and not results["raises"].ok
    assert results["hangs"].detail == "no answer within 0.3 s"
    assert results["raises"].detail == "RuntimeError: the disk is on fire"

    def no_checks():
        raise KeyError("state")

    assert run_checks(no_checks, timeout_s=1) == {"app": Check(False, "the checks could not be prepared (KeyError)")}


def test_key_files_must_exist_be_owner_only_and_readable(tmp_path):
    key = tmp_path / "hospital.key"
    assert not key_files({"hospital key": key}).ok
    assert key_files({"operator key": key}, optional=frozenset({"operator key"})).ok
    key.write_text("0x00")
    key.chmod(0o644)
    assert "readable by others" in key_files({"hospital key": key}).detail
    key.chmod(0o600)
    assert key_files({"hospital key": key}) == Check(True, "hospital key present, owner-only")


def test_a_database_held_by_another_writer_is_busy_not_broken(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'busy.db'}")
    with engine.connect() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        connection.commit()
    writer = engine.raw_connection()
    writer.cursor().execute("BEGIN IMMEDIATE")
    try:
        other = create_engine(f"sqlite:///{tmp_path / 'busy.db'}")
        assert database_writable(other, wait_s=0.1) == Check(True, "the database is busy with another writer")
    finally:
        writer.rollback()
        writer.close()
    assert database_writable(engine) == Check(True, "the database accepts writes")


# ---- /metrics -----------------------------------------------------------------------------------------------------

def sample(text: str, metric: str, **labels) -> float | None:
    """The value of the sample `metric{labels}` in a Prometheus text exposition, None when absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == metric and all(found.labels.get(k) == v for k, v in labels.items()):
                return found.value
    return None


def test_metrics_name_refusals_by_code_without_a_login(tmp_path):
    app = node_console(tmp_path, superlink="")
    before = sample(client(app).get("/metrics").text, "twinledger_refusals_total", code="4004") or 0.0
    with pytest.raises(Refusal):
        raise Refusal(protocol.BUDGET_SPENT, "no data used: the study's budget is spent")
    answer = client(app).get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert sample(answer.text, "twinledger_refusals_total", code="4004", name="privacy budget spent") == before + 1


def test_the_portal_exposes_its_pending_relays_read_from_the_outbox(tmp_path):
    from node.portal.models import ConsentRelay

    app = portal(tmp_path)
    assert sample(client(app).get("/metrics").text, "twinledger_relays_pending") == 0
    with app.state.portal.store.session() as db:
        for status in ("sent", "sent", "recorded"):
            db.add(ConsentRelay(account_id=1, study_id="0x" + "ab" * 32, action="grant", pseudonym="0x" + "cd" * 32,
                                nonce=1, deadline=0, status=status))
        db.commit()
    assert sample(client(app).get("/metrics").text, "twinledger_relays_pending") == 2


@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)  # the hooks do not depend on the chain
def test_a_round_trained_and_evaluated_shows_its_consent_reads_and_the_epsilon_spent_in_the_metrics(hospital, tmp_path):
    app = node_console(tmp_path, superlink="")
    before = sample(client(app).get("/metrics").text, "twinledger_consent_read_seconds_count") or 0.0
    trained = hospital.node.train(hospital.config(1), fresh_state())
    text = client(app).get("/metrics").text
    assert sample(text, "twinledger_consent_read_seconds_count") == before + 1
    assert sample(text, "twinledger_epsilon_spent", study=hospital.study) == pytest.approx(trained.epsilon_spent)
    evaluated = hospital.node.evaluate(hospital.config(1, block=hospital.store.usage()[0].block), fresh_state())
    text = client(app).get("/metrics").text
    assert sample(text, "twinledger_consent_read_seconds_count") >= before + 2  # test patients, and training ones
    assert sample(text, "twinledger_epsilon_spent", study=hospital.study) == pytest.approx(evaluated.epsilon_spent)
    assert evaluated.epsilon_spent > trained.epsilon_spent


# ---- Flower's own health service ----------------------------------------------------------------------------------

def test_the_superlink_and_the_supernode_are_started_with_flowers_health_service_when_asked(tmp_path, monkeypatch):
    from coordinator.processes import superlink_command
    from deploy.cli import main
    from node import cli as node_cli

    command = superlink_command(database=tmp_path / "state.db", host="127.0.0.1", port=9,
                                health_address="127.0.0.1:9098")
    assert command[command.index("--health-server-address") + 1] == "127.0.0.1:9098"
    assert "--health-server-address" not in superlink_command(database=tmp_path / "s.db", host="127.0.0.1", port=9)
    node_home(tmp_path)
    started = []
    monkeypatch.setattr(node_cli.os, "execve", lambda path, argv, env: started.append(argv))
    main(["node", "start", "--home", str(tmp_path / "node"), "--insecure", "--health-server-address", "0.0.0.0:9102"])
    assert started[0][started[0].index("--health-server-address") + 1] == "0.0.0.0:9102"


def test_the_sample_scrape_configuration_lints_and_scrapes_the_consoles_over_https():
    import subprocess
    from pathlib import Path

    import yaml

    from tests.deploy.test_manifests import YAMLLINT_CONFIG, _tool

    path = Path(__file__).resolve().parents[2] / "deploy" / "prometheus.yml"
    linted = subprocess.run([_tool("yamllint"), "--strict", "-d", YAMLLINT_CONFIG, str(path)], capture_output=True,
                            text=True, timeout=60)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    jobs = {job["job_name"]: job for job in yaml.safe_load(path.read_text())["scrape_configs"]}
    assert set(jobs) == {"twinledger-node", "twinledger-coordinator"}
    for job in jobs.values():
        assert job["scheme"] == "https" and job["metrics_path"] == "/metrics"
        ports = {target.rpartition(":")[2] for config in job["static_configs"] for target in config["targets"]}
        assert "8443" not in ports  # never the public portal port
