"""Schemathesis fuzzes the operator console's OpenAPI schema (in-process ASGI app, eth-tester chain, the
stand-in `flwr`): every answer, to good and bad input alike, is never a 5xx and conforms to the schema."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from sqlmodel import Session

from contracts import ledger as lg
from coordinator.console.app import create_app
from deploy.consortium import Consortium, eth_tester
from federation.web import auth
from federation.web.app import untyped
from tests import fuzz
from tests.coordinator.console.test_console import FakeSuperLink, console_settings, write_fake_flwr

pytestmark = [pytest.mark.schema]

CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance]
TOKENS: dict[str, str] = {}


def build_console():
    """The console on an in-process chain with one live study; built at import, as schemathesis needs the app."""
    from contracts.build import compile_contracts

    consortium = Consortium.deploy(eth_tester(), artifacts=compile_contracts(), ether=10)
    consortium.propose_study(epsilon_budget=3.0, delta_exponent=5, rounds=5)
    home = Path(tempfile.mkdtemp(prefix="console-schema-"))
    link = FakeSuperLink()
    app = create_app(console_settings(home / "coordinator", superlink=link.address, flwr=write_fake_flwr(home)),
                     reader=lg.Ledger(consortium.w3, consortium.deployment), operator=consortium.operator)
    with Session(app.state.console.engine) as db:
        TOKENS["operator"] = auth.create_token(db, name="olivia", role="operator")
        TOKENS["observer"] = auth.create_token(db, name="oscar", role="observer")
    return app, home, link


APP, HOME, LINK = build_console()
schema = fuzz.budget(schemathesis.openapi.from_asgi("/openapi.json", APP))


@pytest.fixture(scope="module", autouse=True)
def cleanup():
    yield
    LINK.close()
    shutil.rmtree(HOME, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=fuzz.examples(25), deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_answers_conform_as_operator(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKENS['operator']}"}, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=fuzz.examples(10), deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_answers_conform_as_observer_or_anonymous(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKENS['observer']}"}, checks=CHECKS)
    case.call_and_validate(checks=CHECKS)


def test_the_schema_types_every_endpoint():
    assert not untyped(APP.openapi(), bodiless=("/stop",))
