"""Confirmations and the canonical chain: the coordinator pins a block `confirmations` behind the head and
sends its hash; a node refuses a pinned block whose hash is not the chain's block at that number (a
reorganisation, or a chain that was reset and rebuilt) before it reads anything."""

from __future__ import annotations

import os

import pytest
from eth_account import Account

from coordinator.run_options import RunOptions
from coordinator.server_app import run_options
from coordinator.settings import CoordinatorSettings, SettingsError
from coordinator.study_run import StudyRun
from federation import protocol
from federation.ids import StudyId
from federation.protocol import RoundConfig
from node.consent_gate import Refusal
from tests.node.hospital import fresh_state, hospital  # noqa: F401 - the fixture

BLOCK_HASH = "0x" + "ab" * 32


def test_the_round_config_carries_the_pinned_blocks_hash():
    config = RoundConfig(study_id=StudyId.new(), round=1, block=7, block_hash=BLOCK_HASH.upper().replace("0X", "0x"))
    back = RoundConfig.from_record(config.to_record())
    assert back.block_hash == BLOCK_HASH and back == RoundConfig.from_record(back.to_record())
    record = config.to_record()
    record["block-hash"] = "0x1234"
    with pytest.raises(ValueError, match="block hash"):
        RoundConfig.from_record(record)


def test_the_coordinator_pins_a_block_confirmations_behind_the_head_with_its_hash(chain, tmp_path):
    for _ in range(3):
        chain.operator.register_hospital(Account.create().address, os.urandom(32))  # three more blocks
    head = chain.coordinator.block_number()
    run = StudyRun(None, chain.coordinator, RunOptions(study_id=chain.study_id, confirmations=2), tmp_path)
    state = run.pin(1)
    assert state.config.block == head - 2
    assert state.config.block_hash == "0x" + bytes(chain.w3.eth.get_block(head - 2)["hash"]).hex()
    assert StudyRun(None, chain.coordinator, RunOptions(study_id=chain.study_id), tmp_path).pin(1).config.block == head


def test_confirmations_is_a_coordinator_setting_passed_to_the_run(tmp_path):
    assert CoordinatorSettings(home=tmp_path).confirmations == 2
    settings = CoordinatorSettings(home=tmp_path, confirmations=0)
    assert run_options({"study-id": str(StudyId.new())}, settings).confirmations == 0
    with pytest.raises((SettingsError, ValueError)):
        CoordinatorSettings(home=tmp_path, confirmations=-1)


def test_a_node_refuses_a_pinned_block_that_is_not_the_chains_block_at_that_number(hospital):
    config = hospital.config(1)
    forged = RoundConfig(**{**config.__dict__, "block_hash": BLOCK_HASH})
    with pytest.raises(Refusal) as refused:
        hospital.node.train(forged, fresh_state())
    assert refused.value.code == protocol.PINNED_BLOCK_NOT_CANONICAL
    assert f"block {config.block}" in refused.value.reason
    hospital.uses_nothing()


@pytest.mark.slow  # trains
def test_a_node_trains_on_a_pinned_block_whose_hash_is_the_chains(hospital):
    config = hospital.config(1)
    block_hash = "0x" + bytes(hospital.chain.w3.eth.get_block(config.block)["hash"]).hex()
    outcome = hospital.node.train(RoundConfig(**{**config.__dict__, "block_hash": block_hash}), fresh_state())
    assert outcome.num_examples > 0
