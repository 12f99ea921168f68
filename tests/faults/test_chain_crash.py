"""Fault: the chain node is killed (SIGKILL) and restarted. With its state file, nothing recorded before the
last dump is lost: contracts, hospitals, consents and anchors are all there at the same URL."""

from __future__ import annotations

import time

import pytest

from contracts import ledger as lg
from contracts.audit import audit_study
from tests.faults.chain import record_a_round

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_a_killed_chain_restarts_from_its_state_file_with_contracts_consents_and_anchors(durable, artifacts):
    recorded = record_a_round(lg.connect(durable.start()), artifacts)
    head = recorded.hospital.block_number()
    logs = {recorded.hospital.address: recorded.usage_log()}
    before = audit_study(lg.Ledger(recorded.consortium.w3, recorded.consortium.deployment), recorded.study_id, logs)
    assert (before.violations, before.checked, before.unverified, before.rounds) == (0, 3, 0, 1)
    time.sleep(2.5)  # the state is dumped every second and kept aside once complete
    durable.kill()

    w3 = lg.connect(durable.start())
    auditor = lg.Ledger(w3, recorded.consortium.deployment)
    assert auditor.block_number() >= head
    assert w3.eth.get_code(recorded.consortium.deployment.consent_registry) != b""
    assert auditor.is_active_hospital(recorded.hospital.address)
    assert auditor.study(recorded.study_id).rounds == 3
    everyone = recorded.consenting + recorded.declined
    assert auditor.consents(recorded.study_id, everyone, block="latest") == [True, True, True, False]
    assert auditor.anchor_of(recorded.study_id, 1) == recorded.model_hash
    [anchor] = auditor.round_anchors(recorded.study_id)
    assert anchor.pinned_block == recorded.pinned_block
    # The restarted chain goes on from there: the next transaction is mined on top of the old blocks.
    coordinator = lg.Ledger(w3, recorded.consortium.deployment, account_key=recorded.consortium.coordinator._key)
    receipt = coordinator.anchor_round(recorded.study_id, 2, pinned_block=head, model_hash=b"\x02" * 32,
                                       commitments={recorded.hospital.address: b"\x03" * 32})
    assert receipt["blockNumber"] > head and auditor.anchor_of(recorded.study_id, 2) is not None


def test_the_audit_on_a_restarted_chain_says_which_uses_it_cannot_check(durable, artifacts):
    """anvil keeps earlier states in memory only: after the restart, consent at a block pinned before it cannot
    be read. The audit says so (unverified, with a finding) instead of failing or passing the round."""
    recorded = record_a_round(lg.connect(durable.start()), artifacts)
    time.sleep(2.5)
    durable.kill()
    w3 = lg.connect(durable.start())
    result = audit_study(lg.Ledger(w3, recorded.consortium.deployment), recorded.study_id,
                         {recorded.hospital.address: recorded.usage_log()})
    assert result.rounds == 1 and result.violations == 0 and result.unverified == 3 and result.checked == 0
    assert any(f"at block {recorded.pinned_block} cannot be checked" in f for f in result.findings)
