"""A restored older node database must not reopen a privacy budget: each node records its epsilon spent per study
on chain after a round, and refuses (BUDGET_BEHIND_CHAIN) while its own account shows less."""

from __future__ import annotations

import pytest

from federation import protocol
from federation.ids import StudyId
from federation.protocol import RoundConfig
from node import admin
from node.backup import backup_home, restore_home
from node.consent_gate import Refusal
from node.privacy import BudgetBehindChain, check_chain_spending
from node.service import HospitalNode
from node.settings import NodeSettings
from tests.node.hospital import fresh_state, hospital  # noqa: F401 - the fixture

PASSPHRASE = "a passphrase for the tests"


def test_an_account_below_the_chains_record_is_refused_and_equal_or_above_is_not():
    check_chain_spending(0.5, 500_000, hospital="h1", study_id="0xab")
    check_chain_spending(0.5000009, 500_000, hospital="h1", study_id="0xab")
    check_chain_spending(0.0, 0, hospital="h1", study_id="0xab")
    with pytest.raises(BudgetBehindChain, match=r"hospital h1's privacy account .* \(restored from a backup\?\)"):
        check_chain_spending(0.4999, 500_000, hospital="h1", study_id="0xab")


@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)
def test_a_node_whose_account_is_behind_the_chain_uses_no_data(chain, tmp_path):
    """The chain records spending this node's (empty) account does not hold: its database is older."""
    settings = admin.init_node(tmp_path / "node", hospital="cleveland", rpc_url="unused", deployment_file=None)
    node = HospitalNode(settings, ledger=chain.hospital)
    chain.hospital.record_spending(chain.study_id, 0.8)
    config = RoundConfig(study_id=chain.study_id, round=1, block=chain.hospital.block_number())
    for phase in (node.train, node.evaluate):
        with pytest.raises(Refusal) as refusal:
            phase(config, fresh_state())
        assert refusal.value.code == protocol.BUDGET_BEHIND_CHAIN
        assert "cleveland" in str(refusal.value) and "0.800000" in str(refusal.value)
    assert node.store.usage_log() == [] and node.store.spends(str(StudyId(chain.study_id))) == []


@pytest.mark.slow
@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)  # the anvil variant adds nothing here
def test_a_round_records_spending_on_chain_and_a_restored_older_backup_cannot_train_again(hospital, tmp_path):
    chain, study = hospital.chain, hospital.chain.study_id
    archive = backup_home(hospital.settings, tmp_path / "before-round-1.backup", passphrase=PASSPHRASE)

    outcome = hospital.node.train(hospital.config(1), fresh_state())  # the normal path trains and records

    recorded = chain.hospital.spending_of(study, chain.hospital.address)
    assert recorded == int(outcome.epsilon_spent * 1e6) > 0
    restore_home(archive, hospital.settings.home, passphrase=PASSPHRASE, force=True)
    restored = HospitalNode(NodeSettings.load(hospital.settings.home), ledger=chain.hospital)
    assert restored.store.spends(hospital.study) == []  # the older account: round 1 is not in it
    with pytest.raises(Refusal) as refusal:
        restored.train(hospital.config(2), fresh_state())
    assert refusal.value.code == protocol.BUDGET_BEHIND_CHAIN
    assert restored.store.usage_log() == []  # refused before any record was read


@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)
def test_the_it_console_says_why_a_node_behind_the_chain_refuses_to_train(chain, tmp_path):
    from tests.node.console.test_node_console import Console

    console = Console(tmp_path / "node", ledger=chain.hospital)
    first = console.viewer().get("/api/studies").json()["studies"][0]
    assert first["epsilon_on_chain"] == 0 and first["behind_chain"] is None
    chain.hospital.record_spending(chain.study_id, 0.8)
    first = console.viewer().get("/api/studies").json()["studies"][0]
    assert first["epsilon_on_chain"] == 0.8 and "code 4013" in first["behind_chain"]
    assert "restored from a backup" in first["behind_chain"]
