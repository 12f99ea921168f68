"""Fault suite, the portal under load (issue 15 #6): many patients changing consent at once through the real
portal process (`twinledger portal serve`) on anvil, and the portal killed while changes are on their way.

Every change is answered without a 5xx, none is lost, each withdrawal is recorded on chain, and the patient
can follow each change from "sent" to "recorded at block N"."""

from __future__ import annotations

import asyncio
import os

import pytest

from benchmarks.load import (build_site, change_all_at_once, log_in, lost_changes, patient_client, run_in_own_loop,
                             summary, wait_until_settled)
from node.portal import security as portal_security

pytestmark = [pytest.mark.slow]

PRODUCTION_SCRYPT_N = 2**14  # node/portal/security.py's
PATIENTS = int(os.environ.get("TWINLEDGER_LOAD_PATIENTS", "100"))


@pytest.fixture
def site(artifacts, anvil_url, tmp_path, monkeypatch):
    # The accounts are hashed here and checked by a real portal process, which uses the production scrypt cost:
    # not the cheap one tests/conftest.py sets for in-process tests.
    monkeypatch.setattr(portal_security, "SCRYPT_N", PRODUCTION_SCRYPT_N)
    site = build_site(tmp_path, rpc_url=anvil_url, patients=PATIENTS, artifacts=artifacts)
    yield site
    site.stop_portal()


def follow_up(site, outcomes) -> None:
    """Each patient asks the portal once what became of the change (what the page shows)."""
    async def ask(outcome, gate: asyncio.Semaphore) -> None:
        if outcome.change_id is None:
            return
        async with gate, patient_client(site, timeout_s=60) as client:
            await log_in(client, outcome.patient, asyncio.Semaphore(1))
            async with client.get(f"/api/changes/{outcome.change_id}") as answer:
                outcome.final = await answer.json() | {"http_status": answer.status}

    async def everyone() -> None:
        gate = asyncio.Semaphore(8)
        await asyncio.gather(*(ask(o, gate) for o in outcomes))

    run_in_own_loop(everyone())


def automine(site, on: bool) -> None:
    provider = site.hospital.w3.provider
    provider.make_request("evm_setAutomine", [on])
    if on:
        provider.make_request("evm_mine", [])  # what waited in the mempool


def _check(site, outcomes, rows):
    figures = summary(site, outcomes, rows)
    failures = [(o.patient.username, o.action, o.status, o.detail) for o in outcomes if o.status >= 500]
    assert figures["http_5xx"] == 0, failures[:5]
    lost = [(o.patient.username, o.action, o.status, o.detail) for o in lost_changes(site, outcomes, rows)]
    assert not lost, lost[:5]
    # Nothing failed here (the chain is up and every signature is fresh): every change is on chain.
    assert figures["failed"] == 0, [(r.id, r.action, r.reason) for r in rows if r.status == "failed"][:5]
    for outcome in outcomes:
        assert site.holds_consent(outcome.patient) == (outcome.action == "grant"), outcome.patient.username
    return figures


def test_patients_changing_consent_at_once_get_no_5xx_and_lose_no_change(site):
    site.start_portal()
    outcomes = change_all_at_once(site)
    assert all(o.status in (200, 202) for o in outcomes), {(o.status, o.detail) for o in outcomes}
    rows = wait_until_settled(site, timeout_s=180)
    figures = _check(site, outcomes, rows)
    assert figures["relayed_per_tx"] > 1  # grants go out in batches
    follow_up(site, outcomes)
    for outcome in outcomes:
        final = outcome.final
        assert final["status"] == "recorded" and final["on_chain"] is True, final
        assert f"block {final['block']}" in final["explanation"]


def test_a_portal_killed_with_changes_on_their_way_relays_them_after_its_restart(site):
    site.start_portal(relay_wait_s=0)  # every answer is "sent": the change is in the outbox, not yet on chain
    # The portal answers faster than it relays no more: hold the relay's transactions in anvil's mempool (no
    # automine), so that changes are still on their way when the portal dies, and one transaction the portal
    # sent may be mined only after it died (the restart must recognise it as recorded, not fail it).
    automine(site, False)
    try:
        outcomes = change_all_at_once(site)
        assert all(o.status in (200, 202) for o in outcomes), {(o.status, o.detail) for o in outcomes}
        site.kill_portal()  # at once: the changes are still in the outbox
    finally:
        automine(site, True)
    pending = [r for r in site.changes() if r.status == "sent"]
    site.start_portal()
    rows = wait_until_settled(site, timeout_s=180)
    _check(site, outcomes, rows)
    assert pending, "the portal recorded everything before it was killed: nothing was left to resume"
