"""A hospital's chain key rotated on chain (issue 14 item 5): its registration address stays its identity, the
key acting for it changes (`rotateHospitalKey`, or the operator's `setHospitalSigner` for a lost key). After a
rotation the old key can do nothing; the new key accepts studies, records spending, enrols and sets the node key,
all for the same hospital; an audit of rounds signed before and after the rotation passes."""

from __future__ import annotations

import secrets

import pytest
from eth_account import Account

from contracts import ledger as lg
from contracts.audit import audit_study
from deploy.cli import main
from federation.commitment import combined_commitment
from federation.ids import Pseudonym, StudyId
from node import admin as node_admin
from node.hospital_key import recorded_hospital_account
from tests.contracts.test_audit_signatures import EMPTY, MODEL, _reply, _stored
from tests.contracts.test_node_keys_and_finality import _node_key

# The contract behaves alike on both chains (test_governance.py runs the anvil leg of the same fixtures): the
# in-process chain keeps the CI budget.
pytestmark = pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)

FAR = 4_102_444_800  # 2100-01-01


def _accepted(ledger: lg.Ledger, study: bytes, hospital: str) -> bool:
    return ledger.consortium.functions.hasAccepted(study, hospital).call()


def _rotate(chain) -> lg.Ledger:
    """The fixture's hospital handed to a new funded key; returns that key's ledger."""
    new = chain.consortium.account()
    chain.hospital.rotate_hospital_key(new.signer)
    return chain.ledger_for(new._key)


def _new_study(chain) -> StudyId:
    study = StudyId.new()
    chain.operator.propose_study(study, purpose="HRESCH", task_id="heart-disease/v1", epsilon_budget=1,
                                 delta_exponent=5, rounds=2, ends_at=FAR)
    return study


def test_after_a_rotation_the_old_key_can_do_nothing(chain):
    hospital = chain.hospital.address
    new = _rotate(chain)
    assert chain.operator.hospital_of(chain.hospital.signer) is None
    assert chain.operator.signer_of(hospital) == new.signer
    study = _new_study(chain)
    old = chain.hospital
    for attempt in (lambda: old.accept_study(study), lambda: old.record_spending(chain.study_id, 0.1),
                    lambda: old.set_node_key(_node_key()[0]), lambda: old.rotate_hospital_key(old.signer)):
        with pytest.raises(lg.ContractRejected, match="not a registered hospital"):
            attempt()
    with pytest.raises(lg.ContractRejected, match="not an active hospital"):
        old.enrol([Pseudonym(secrets.token_bytes(32))], [Account.create().address])
    assert not _accepted(old, study, hospital)


def test_the_new_key_acts_for_the_same_hospital(chain):
    hospital = chain.hospital.address
    new = _rotate(chain)
    assert new.address == hospital and new.signer != hospital  # the ledger acts as the hospital it signs for
    study = _new_study(chain)
    new.accept_study(study)
    assert _accepted(new, study, hospital) and new.is_study_live_for(study, hospital)
    new.record_spending(chain.study_id, 0.25)
    assert new.spending_of(chain.study_id, hospital) == 250_000
    point, fingerprint = _node_key()
    new.set_node_key(point)
    assert new.hospital_by_node_id(fingerprint) == hospital
    pseudonym = Pseudonym(secrets.token_bytes(32))
    new.enrol([pseudonym], [Account.create().address])
    assert new.consent.functions.enrolledBy(pseudonym).call() == hospital


def test_rotation_is_recorded_and_keys_cannot_be_shared(chain):
    start = chain.hospital.block_number()
    new = chain.consortium.account()
    receipt = chain.hospital.rotate_hospital_key(new.signer)
    (event,) = chain.hospital.consortium.events.HospitalKeyRotated().process_receipt(receipt)
    assert (event["args"]["account"], event["args"]["previousSigner"], event["args"]["newSigner"]) == (
        chain.hospital.address, chain.hospital.address, new.signer)
    assert chain.operator.hospital_of(new.signer, block=start) is None  # read at a block: before, it was nobody's
    for taken in (chain.other_hospital.address, new.signer, "0x" + "00" * 20):
        with pytest.raises(lg.ContractRejected, match="SignerInUse|already acts"):
            chain.operator.set_hospital_signer(chain.other_hospital.address, taken)
    with pytest.raises(lg.ContractRejected, match="already acts"):
        chain.operator.register_hospital(new.signer, b"\x00" * 32)


def test_the_operator_names_a_new_key_for_a_hospital_that_lost_its_own(chain, monkeypatch, capsys):
    from contracts import consortium_cli

    replacement = chain.consortium.account()
    monkeypatch.setattr(consortium_cli, "_operator", lambda args: chain.hospital)
    assert main(["consortium", "set-hospital-signer", chain.other_hospital.address, replacement.signer]) == 2
    assert "lacks the role OPERATOR_ROLE" in capsys.readouterr().err
    monkeypatch.setattr(consortium_cli, "_operator", lambda args: chain.operator)
    assert main(["consortium", "set-hospital-signer", chain.other_hospital.address, replacement.signer]) == 0
    assert chain.ledger_for(replacement._key).address == chain.other_hospital.address
    with pytest.raises(lg.ContractRejected, match="not a registered hospital"):
        chain.other_hospital.accept_study(chain.study_id)


def test_an_audit_of_rounds_before_and_after_the_rotation_passes(chain):
    hospital = chain.hospital.address
    anchors, replies = {}, {}
    for round_number in (1, 2):
        if round_number == 2:
            signer = _rotate(chain)
        else:
            signer = chain.hospital
        block = chain.coordinator.block_number()
        chain.coordinator.anchor_round(chain.study_id, round_number, pinned_block=block, model_hash=MODEL,
                                       commitments={hospital: combined_commitment(EMPTY, EMPTY)})
        anchors[round_number] = block
        replies[round_number] = [_stored(signer, _reply(chain, block, phase, round=round_number), hospital=hospital)
                                 for phase in ("train", "evaluate")]
    entries = [{"study_id": str(StudyId(chain.study_id)), "round": r, "phase": phase, "block": anchors[r],
                "commitment": str(EMPTY), "pseudonyms": []} for r in (1, 2) for phase in ("train", "evaluate")]
    logs = {hospital: {"hospital": "alpha", "account": hospital, "entries": entries}}
    report = {"rounds": [{"round": r, "replies": replies[r]} for r in (1, 2)]}
    auditor = lg.Ledger(chain.w3, chain.deployment)
    result = audit_study(auditor, chain.study_id, logs, report=report)
    assert result.violations == 0 and result.signatures_checked == 4, result.findings

    # The old key signing the round after the rotation is a forgery.
    report["rounds"][1]["replies"] = [_stored(chain.hospital, _reply(chain, anchors[2], phase, round=2),
                                              hospital=hospital) for phase in ("train", "evaluate")]
    result = audit_study(auditor, chain.study_id, logs, report=report)
    assert result.violations >= 2 and any("that key acted for no hospital" in f for f in result.findings)


def test_node_rotate_hospital_key_keeps_the_identity_in_the_node_home(chain, tmp_path, monkeypatch, capsys):
    settings = node_admin.init_node(tmp_path / "node", hospital="h3", rpc_url="in-process", deployment_file=None)
    identity = node_admin.hospital_address(settings)
    lg.fund_from_dev_account(chain.w3, identity, ether=5)
    chain.operator.register_hospital(identity, b"\x00" * 32)
    monkeypatch.setattr(lg.Ledger, "from_settings", classmethod(
        lambda cls, s, *, key_file=None, key_role=None: chain.ledger_for(lg.load_key(key_file))))
    old_key = settings.hospital_key_file.read_text()

    assert main(["node", "rotate-hospital-key", "--home", str(settings.home)]) == 0
    assert "now acts through" in capsys.readouterr().out
    assert settings.hospital_key_file.read_text() != old_key
    new = chain.ledger_for(lg.load_key(settings.hospital_key_file))
    assert new.address == identity and new.signer != identity
    assert recorded_hospital_account(settings.hospital_key_file) == identity
    assert node_admin.hospital_address(settings) == identity  # the usage export and the IT console name it so
    assert chain.w3.eth.get_balance(new.signer) > 0  # the old account's ether pays the new key's gas
    new.accept_study(chain.study_id)
    assert _accepted(new, chain.study_id, identity)

    assert main(["node", "rotate-hospital-key", "--home", str(settings.home)]) == 0  # and again, from the new key
    assert chain.operator.hospital_of(new.signer) is None
    assert node_admin.hospital_address(settings) == identity
