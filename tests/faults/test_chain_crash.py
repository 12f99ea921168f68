"""Fault: the chain node is killed (SIGKILL) and restarted. With its state file, nothing recorded before the
last dump is lost: contracts, hospitals, consents and anchors are all there at the same URL."""

from __future__ import annotations

import time

import pytest

from contracts import ledger as lg
from tests.faults.chain import DurableChain, record_a_round

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def durable(tmp_path):
    chain = DurableChain(tmp_path)
    yield chain
    chain.stop()


def test_a_killed_chain_restarts_from_its_state_file_with_contracts_consents_and_anchors(durable, artifacts):
    recorded = record_a_round(lg.connect(durable.start()), artifacts)
    head = recorded.hospital.block_number()
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
