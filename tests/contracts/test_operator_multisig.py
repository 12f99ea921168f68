"""The operator role held by a contract account (issue 14 item 5): AccessControl takes any address, so a multisig
wallet can be the operator. A test-only forwarding wallet (tests/contracts/ForwardingWallet.sol) stands in for a
Safe: its owners act through it, nobody else can, and the first operator's key can then be revoked."""

from __future__ import annotations

from pathlib import Path

import pytest
import solcx

from contracts import ledger as lg
from contracts.build import EVM_VERSION, SOLC_SHIM

# Compiling with solc-js takes seconds; the wallet behaves alike on both chains, so the in-process one suffices.
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)]

WALLET_SOURCE = Path(__file__).with_name("ForwardingWallet.sol")


@pytest.fixture(scope="module")
def wallet_artifact() -> dict:
    output = solcx.compile_standard({
        "language": "Solidity",
        "sources": {WALLET_SOURCE.name: {"content": WALLET_SOURCE.read_text()}},
        "settings": {"evmVersion": EVM_VERSION, "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}}},
    }, solc_binary=SOLC_SHIM)
    compiled = output["contracts"][WALLET_SOURCE.name]["ForwardingWallet"]
    return {"abi": compiled["abi"], "bytecode": "0x" + compiled["evm"]["bytecode"]["object"]}


def _deploy_wallet(owner: lg.Ledger, artifact: dict, owners: list[str]):
    factory = owner.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = owner._transact(factory.constructor(owners))
    return owner.w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])


def test_a_wallet_contract_holds_the_operator_role_and_its_owners_act_through_it(chain, wallet_artifact):
    signer = chain.consortium.account()  # one of the wallet's owners
    wallet = _deploy_wallet(signer, wallet_artifact, [signer.address])
    chain.operator.grant_operator(wallet.address, admin=True)
    suspend = chain.operator.consortium.functions.setHospitalSuspended(chain.other_hospital.address, True)
    signer._transact(wallet.functions.execute(chain.deployment.consortium, suspend._encode_transaction_data()))
    assert not chain.operator.is_active_hospital(chain.other_hospital.address)

    outsider = chain.consortium.account()
    with pytest.raises(lg.ContractRejected):
        outsider._transact(wallet.functions.execute(chain.deployment.consortium, suspend._encode_transaction_data()))

    # The wallet, as admin, takes the first operator's key out of the consortium.
    for role in ("DEFAULT_ADMIN_ROLE", "OPERATOR_ROLE"):
        revoke = chain.operator.consortium.functions.revokeRole(chain.operator.role_id(role), chain.operator.address)
        signer._transact(wallet.functions.execute(chain.deployment.consortium, revoke._encode_transaction_data()))
    assert chain.operator.roles_of(chain.operator.address) == []
    assert chain.operator.roles_of(wallet.address) == ["DEFAULT_ADMIN_ROLE", "OPERATOR_ROLE"]
    with pytest.raises(lg.ContractRejected, match="lacks the role OPERATOR_ROLE"):
        chain.operator.set_hospital_suspended(chain.other_hospital.address, False)
