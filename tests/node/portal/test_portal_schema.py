"""Schemathesis fuzzes the patient portal's OpenAPI schema (in-process ASGI app, eth-tester chain): every answer,
to good and bad input alike, logged in as a patient (portal-held or wallet-held key), as staff or anonymous, is
never a 5xx and conforms to the schema."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import schemathesis
from eth_account import Account
from hypothesis import HealthCheck, settings
from schemathesis import checks
from sqlmodel import select

from deploy.consortium import Consortium, eth_tester
from federation.commitment import combined_commitment, pseudonym_commitment
from federation.ids import Pseudonym
from federation.web.app import untyped
from node.portal import accounts
from node.portal.models import PortalAccount
from node.store import RoundUsage
from tests import fuzz
from tests.node.portal.test_portal import PASSWORD, Portal

pytestmark = [pytest.mark.schema]

CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance]
WORLD: dict = {}


def build_portal() -> Portal:
    """The portal on an in-process chain, with a granted patient, a wallet patient and an anchored round that used
    the first; built at import, as schemathesis needs the app when it collects the tests."""
    from contracts.build import compile_contracts

    consortium = Consortium.deploy(eth_tester(), artifacts=compile_contracts(), ether=10)
    hospital = consortium.add_hospital(node_id=b"\x01" * 32)
    coordinator = consortium.add_coordinator()
    study = consortium.propose_study(epsilon_budget=3.0, delta_exponent=5, rounds=5)
    hospital.accept_study(study)
    portal = Portal(SimpleNamespace(hospital=hospital, study_id=study), Path(tempfile.mkdtemp(prefix="portal-schema-")))
    alice = portal.enrol("alice", portal.records[0])
    client, csrf = portal.login("alice")
    assert client.post(f"/api/studies/{portal.study}/grant", json={"password": PASSWORD["alice"]},
                       headers=csrf).status_code == 200
    code = portal.staff(client, portal.records[1]).json()["code"]
    assert portal.client().post("/api/enrolment", json={"code": code, "username": "walt", "password": "a wallet user pw",
                                                        "wallet_address": Account.create().address}).status_code == 201
    # Round 1 used Alice's data and is anchored: the round endpoints have something real to show.
    block = hospital.block_number()
    commitment = pseudonym_commitment([Pseudonym.parse(alice["pseudonym"])])
    for phase in ("train", "evaluate"):
        portal.store.record_usage(RoundUsage(study_id=portal.study, round=1, phase=phase, block=block,
                                             pseudonyms=json.dumps([alice["pseudonym"]]), commitment=str(commitment)))
    coordinator.anchor_round(study, 1, pinned_block=block, model_hash=b"\x05" * 32,
                             commitments={hospital.address: combined_commitment(commitment, commitment)})
    return portal


PORTAL = build_portal()
WORLD["portal"] = PORTAL
schema = fuzz.budget(schemathesis.openapi.from_asgi("/openapi.json", PORTAL.app))


@pytest.fixture(scope="module", autouse=True)
def cleanup():
    yield
    PORTAL.app.state.portal.relayer.shutdown()
    shutil.rmtree(PORTAL.settings.node.home, ignore_errors=True)  # the mkdtemp directory itself, nothing above it


def _logged_in(username: str) -> tuple[dict, dict]:
    """A fresh session for one case (a fuzzed DELETE /api/session must not end the next case's)."""
    portal = WORLD["portal"]
    with portal.store.session() as db:
        account = db.exec(select(PortalAccount).where(PortalAccount.username == username)).one()
        opened = accounts.open_session(db, portal.settings, account)
    return ({portal.settings.cookie_name: opened.token},
            {"X-CSRF-Token": opened.csrf_token, "Authorization": f"Bearer {portal.staff_token}"})


def _real_study(case) -> None:
    # Random study ids are all 404; half the interest is in the study that exists.
    if case.path_parameters and "study_id" in case.path_parameters:
        case.path_parameters["study_id"] = WORLD["portal"].study


@schema.parametrize()
@settings(max_examples=fuzz.examples(15), deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_answers_conform_as_a_patient_with_a_portal_held_key(case):
    _real_study(case)
    cookies, headers = _logged_in("alice")
    case.call_and_validate(cookies=cookies, headers=headers, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=fuzz.examples(8), deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_answers_conform_as_a_wallet_patient_or_anonymous(case):
    cookies, headers = _logged_in("walt")
    case.call_and_validate(cookies=cookies, headers=headers, checks=CHECKS)
    case.call_and_validate(checks=CHECKS)


def test_the_schema_types_every_endpoint():
    document = PORTAL.app.openapi()
    assert document["paths"], "the portal publishes no API"
    assert not untyped(document)
