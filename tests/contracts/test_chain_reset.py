"""A chain that lost the contracts or was reset is recognised and named, never a raw web3 error: the ledger
client raises ChainReset (a LedgerError), the node refuses with the protocol code CHAIN_RESET, and the
deployment file records the hash of its block so that contracts redeployed at the same addresses on a new
chain are told apart too. On the in-process chain (a reset is a revert to a snapshot taken before the deployment)."""

from __future__ import annotations

import pytest

from contracts import ledger as lg
from deploy.consortium import Consortium, eth_tester
from federation import protocol
from node.consent_gate import ConsentGate, Refusal


@pytest.fixture
def reset_chain(artifacts):
    """(w3, consortium, reset): a deployment with one accepted study; `reset()` takes the chain back to before it."""
    w3 = eth_tester()
    tester = w3.provider.ethereum_tester
    before = tester.take_snapshot()
    consortium = Consortium.deploy(w3, artifacts=artifacts, ether=10)
    consortium.add_coordinator()
    return w3, consortium, lambda: tester.revert_to_snapshot(before)


def test_the_deployment_records_the_hash_of_its_block(reset_chain):
    w3, consortium, _ = reset_chain
    deployment = consortium.deployment
    assert deployment.deployed_block_hash == "0x" + bytes(w3.eth.get_block(deployment.deployed_block)["hash"]).hex()


def test_opening_the_ledger_on_a_chain_without_the_contracts_raises_chain_reset(reset_chain):
    w3, consortium, reset = reset_chain
    reset()
    with pytest.raises(lg.ChainReset, match="no longer holds the TwinLedger contracts"):
        lg.Ledger(w3, consortium.deployment)


def test_another_block_at_the_deployment_block_number_is_a_reset_chain(reset_chain):
    w3, consortium, _ = reset_chain
    other = lg.Deployment(**{**consortium.deployment.__dict__, "deployed_block_hash": "0x" + "ab" * 32})
    with pytest.raises(lg.ChainReset, match="another block"):
        lg.Ledger(w3, other)


def test_a_deployment_file_without_a_block_hash_still_opens(reset_chain):
    w3, consortium, _ = reset_chain
    older = {k: v for k, v in consortium.deployment.__dict__.items() if k != "deployed_block_hash"}
    assert lg.Ledger(w3, lg.Deployment(**older)).block_number() >= 0


def test_reads_after_a_reset_raise_chain_reset_not_a_raw_web3_error(reset_chain):
    w3, consortium, reset = reset_chain
    auditor = lg.Ledger(w3, consortium.deployment)
    study = consortium.propose_study()
    reset()
    with pytest.raises(lg.ChainReset):
        auditor.study(study)
    with pytest.raises(lg.ChainReset):
        auditor.consents(study, [b"\x01" * 32], block="latest")
    with pytest.raises(lg.ChainReset):
        auditor.anchor_of(study, 1)


def test_the_consent_gate_refuses_a_reset_chain_with_the_chain_reset_code(reset_chain):
    w3, consortium, reset = reset_chain
    hospital = consortium.add_hospital()
    study = consortium.propose_study()
    hospital.accept_study(study)
    block = hospital.block_number()
    reset()
    w3.provider.ethereum_tester.mine_blocks(block + 1)  # the new chain is even past the pinned block
    gate = ConsentGate(hospital, store=None, vault=None, hospital_account=hospital.address)
    with pytest.raises(Refusal) as refused:
        gate.check_study(study, block, round_number=1)
    assert refused.value.code == protocol.CHAIN_RESET
    assert "reset" in refused.value.reason and protocol.ERROR_NAMES[protocol.CHAIN_RESET] == "chain reset"
