"""The dev chain's state file survives a kill in the middle of a dump (contracts/devchain/state.py): anvil writes
it in place, so a cut-short file is replaced by the last complete copy the keeper made."""

from __future__ import annotations

import json

import pytest

from contracts.devchain import state as chain_state

DUMP = json.dumps({"best_block_number": 7, "blocks": [{"number": n} for n in range(8)]}).encode()


def test_the_keeper_copies_complete_dumps_only(tmp_path):
    state = tmp_path / "chain-state.json"
    keeper = chain_state.StateKeeper(state, interval_s=1, alive=lambda: True)
    state.write_bytes(DUMP[: len(DUMP) // 2])  # anvil in the middle of writing
    assert not keeper.keep() and not chain_state.kept_path(state).exists()
    state.write_bytes(DUMP)
    assert keeper.keep() and chain_state.kept_path(state).read_bytes() == DUMP
    assert not keeper.keep()  # unchanged since


def test_a_state_file_cut_short_by_a_kill_is_restored_from_the_kept_copy(tmp_path):
    state = tmp_path / "chain-state.json"
    chain_state.kept_path(state).write_bytes(DUMP)
    state.write_bytes(DUMP[:-40])
    chain_state.restore(state)
    assert json.loads(state.read_bytes())["best_block_number"] == 7


def test_a_cut_short_state_file_without_a_kept_copy_is_refused_with_a_reason(tmp_path):
    state = tmp_path / "chain-state.json"
    state.write_bytes(DUMP[:-40])
    with pytest.raises(ValueError, match="cut short"):
        chain_state.restore(state)


def test_a_complete_or_missing_state_file_is_left_alone(tmp_path):
    state = tmp_path / "chain-state.json"
    chain_state.restore(state)
    assert not state.exists()
    state.write_bytes(DUMP)
    chain_state.restore(state)
    assert state.read_bytes() == DUMP
