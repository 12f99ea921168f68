"""Schemathesis fuzzes the node console's OpenAPI schema (in-process ASGI app, eth-tester chain, real node home):
every answer, to good and bad input alike, as an it-admin (token or session with CSRF), a viewer or anonymous,
is never a 5xx and conforms to the schema."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from deploy.consortium import Consortium, eth_tester
from federation.web import auth
from federation.web.app import untyped
from node.store import RoundUsage
from tests import fuzz
from tests.node.console.test_node_console import CSV_TYPE, Console, bundle_text, lines

pytestmark = [pytest.mark.schema]

CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance]
WORLD: dict = {}


def build_console():
    """A console on an in-process chain with one accepted study and some records; built at import, as
    schemathesis needs the app before fixtures run (pytest 9 and schemathesis' from_fixture disagree)."""
    from contracts.build import compile_contracts

    consortium = Consortium.deploy(eth_tester(), artifacts=compile_contracts(), ether=10)
    hospital = consortium.add_hospital(node_id=b"\x01" * 32)
    study = consortium.propose_study(epsilon_budget=3.0, delta_exponent=5, rounds=5)
    hospital.accept_study(study)
    home = Path(tempfile.mkdtemp(prefix="node-console-schema-"))
    console = Console(home / "node", ledger=hospital, max_upload_bytes=64 * 1024)
    client = console.admin()
    assert client.post("/api/imports", content=lines("cleveland", 10), headers=CSV_TYPE).status_code == 201
    assert client.post("/api/imports", content=bundle_text("hungarian", 5),
                       headers={"Content-Type": "application/fhir+json"}).status_code == 201
    assert client.post("/api/enrolment-codes", json={"record_number": "CLE-00001"}).status_code == 201
    console.store.record_usage(RoundUsage(study_id=str(study), round=1, phase="train", block=1,
                                          commitment="0x00", pseudonyms=json.dumps([])))
    WORLD.update(console=console)
    return console.app, home


APP, HOME = build_console()
schema = fuzz.budget(schemathesis.openapi.from_asgi("/openapi.json", APP))


@pytest.fixture(scope="module", autouse=True)
def cleanup():
    yield
    shutil.rmtree(HOME, ignore_errors=True)


def _session(name: str) -> tuple[dict, dict]:
    """A fresh browser session for one case (a fuzzed DELETE /api/session must not end the next case's)."""
    console = WORLD["console"]
    with console.store.session() as db:
        holder = next(h for h in (auth.token_holder(db, console.admin_token), auth.token_holder(db, console.viewer_token))
                      if h.name == name)
        opened = auth.open_session(db, holder, ttl_s=600)
    return {console.settings.cookie_name: opened.cookie_token}, {"X-CSRF-Token": opened.csrf_token}


@schema.parametrize()
@settings(max_examples=fuzz.examples(15), deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_answers_conform_as_an_it_admin(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {WORLD['console'].admin_token}"}, checks=CHECKS)
    cookies, headers = _session("ada")
    case.call_and_validate(cookies=cookies, headers=headers, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=fuzz.examples(8), deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_answers_conform_as_a_viewer_or_anonymous(case):
    cookies, headers = _session("vic")
    case.call_and_validate(cookies=cookies, headers=headers, checks=CHECKS)
    case.call_and_validate(checks=CHECKS)


def test_the_schema_types_every_endpoint():
    document = APP.openapi()
    assert {"/api/health", "/api/patients", "/api/imports", "/api/enrolment-codes", "/api/studies", "/api/actions",
            "/api/session"} <= set(document["paths"])
    assert not untyped(document)
