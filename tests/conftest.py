"""Shared fixtures: an in-process chain (eth-tester) with the TwinLedger contracts deployed."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import pytest
from eth_account import Account
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider

from contracts import ledger as lg


@dataclass
class Chain:
    w3: Web3
    deployment: lg.Deployment
    operator: lg.Ledger
    hospital: lg.Ledger
    other_hospital: lg.Ledger
    coordinator: lg.Ledger
    study_id: bytes

    def ledger_for(self, key: str) -> lg.Ledger:
        return lg.Ledger(self.w3, self.deployment, account_key=key)


def fresh_funded_key(w3: Web3) -> str:
    key = "0x" + secrets.token_hex(32)
    lg.fund_from_dev_account(w3, Account.from_key(key).address, ether=10)
    return key


@pytest.fixture(scope="session")
def artifacts():
    from contracts.build import compile_contracts

    return compile_contracts()


@pytest.fixture
def chain(artifacts) -> Chain:
    """A fresh in-process chain with a consortium, two hospitals, a coordinator and one accepted study."""
    w3 = Web3(EthereumTesterProvider())
    operator_key = fresh_funded_key(w3)
    deployment = lg.deploy(w3, operator_key, artifacts=artifacts)
    operator = lg.Ledger(w3, deployment, account_key=operator_key)
    hospital = lg.Ledger(w3, deployment, account_key=fresh_funded_key(w3))
    other = lg.Ledger(w3, deployment, account_key=fresh_funded_key(w3))
    coordinator = lg.Ledger(w3, deployment, account_key=fresh_funded_key(w3))
    operator.register_hospital(hospital.address, b"\x01" * 32)
    operator.register_hospital(other.address, b"\x02" * 32)
    operator.grant_coordinator(coordinator.address)
    study_id = lg.new_study_id()
    operator.propose_study(
        study_id,
        purpose="HRESCH",
        task_id="heart-disease/v1",
        epsilon_budget=3.0,
        delta_exponent=5,
        rounds=5,
        ends_at=int(time.time()) + 30 * 24 * 3600,
    )
    hospital.accept_study(study_id)
    return Chain(w3, deployment, operator, hospital, other, coordinator, study_id)
