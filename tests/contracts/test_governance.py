"""The operator's governance (issue 14 item 5): suspending hospitals and studies, revoking the coordinator, a
second operator and the first one's revocation, and no way to revoke the last admin. On the real chain fixtures;
each `twinledger consortium` command is run through the real CLI over the fixture's operator."""

from __future__ import annotations

import pytest

from contracts import consortium_cli
from coordinator import admission
from coordinator.node_follower import NodeFollower
from contracts import ledger as lg
from deploy.cli import main
from federation import protocol
from node.consent_gate import ConsentGate, Refusal
from tests.coordinator.test_admission import FakeLink, _point


def _cli(monkeypatch, as_ledger: lg.Ledger, *argv: str) -> int:
    """`twinledger consortium ...` signed by `as_ledger`'s key (the fixture's chain needs no URL)."""
    monkeypatch.setattr(consortium_cli, "_operator", lambda args: as_ledger)
    return main(["consortium", *argv])


def _gate(chain) -> ConsentGate:
    """The hospital node's study check (the gate reads no record before it)."""
    return ConsentGate(chain.hospital, store=None, vault=None, hospital_account=chain.hospital.address)


def test_a_suspended_hospitals_node_refuses_and_is_refused_and_it_can_accept_nothing(chain, monkeypatch, capsys):
    chain.hospital.set_node_key(_point())
    link = FakeLink()
    follower = NodeFollower(chain.operator, link)  # the coordinator's: the SuperLink admits the chain's keys
    follower.step()
    _gate(chain).check_study(chain.study_id, chain.hospital.block_number())  # live before
    assert _cli(monkeypatch, chain.operator, "suspend-hospital", chain.hospital.address) == 0
    assert "suspended hospital" in capsys.readouterr().out
    assert len(follower.step().unregistered) == 1  # its SuperNode is shut out of the federation
    assert all(node.status == admission.UNREGISTERED for node in link.nodes())
    with pytest.raises(Refusal) as refused:
        _gate(chain).check_study(chain.study_id, chain.hospital.block_number())
    assert refused.value.code == protocol.STUDY_NOT_ACCEPTED
    with pytest.raises(lg.ContractRejected, match="is suspended"):
        chain.hospital.accept_study(chain.study_id)
    assert _cli(monkeypatch, chain.operator, "reinstate-hospital", chain.hospital.address) == 0
    _gate(chain).check_study(chain.study_id, chain.hospital.block_number())


def test_a_suspended_study_is_refused_by_every_node_until_resumed(chain, monkeypatch):
    study = "0x" + chain.study_id.hex()
    assert _cli(monkeypatch, chain.operator, "suspend-study", study) == 0
    assert chain.hospital.study(chain.study_id).suspended
    with pytest.raises(Refusal) as refused:
        _gate(chain).check_study(chain.study_id, chain.hospital.block_number())
    assert refused.value.code == protocol.STUDY_NOT_ACCEPTED
    assert _cli(monkeypatch, chain.operator, "resume-study", study) == 0
    _gate(chain).check_study(chain.study_id, chain.hospital.block_number())


def test_a_revoked_coordinator_cannot_anchor(chain, monkeypatch, capsys):
    assert _cli(monkeypatch, chain.operator, "revoke-coordinator", chain.coordinator.address) == 0
    with pytest.raises(lg.ContractRejected, match="lacks the role COORDINATOR_ROLE") as caught:
        chain.coordinator.anchor_round(chain.study_id, 1, pinned_block=1, model_hash=b"\x05" * 32, commitments={})
    assert caught.value.error_name == "AccessControlUnauthorizedAccount"
    assert not chain.operator.has_role("COORDINATOR_ROLE", chain.coordinator.address)


def test_only_an_operator_governs(chain, monkeypatch, capsys):
    assert _cli(monkeypatch, chain.hospital, "suspend-hospital", chain.other_hospital.address) == 2
    assert "lacks the role OPERATOR_ROLE" in capsys.readouterr().err
    assert _cli(monkeypatch, chain.coordinator, "revoke-coordinator", chain.coordinator.address) == 2
    assert "lacks the role DEFAULT_ADMIN_ROLE" in capsys.readouterr().err
    assert chain.operator.is_active_hospital(chain.other_hospital.address)


def test_a_second_operator_acts_and_revokes_the_first(chain, monkeypatch, capsys):
    second = chain.consortium.account()
    assert _cli(monkeypatch, chain.operator, "grant-operator", "--admin", second.address) == 0
    assert "DEFAULT_ADMIN_ROLE, OPERATOR_ROLE" in capsys.readouterr().out
    assert _cli(monkeypatch, second, "suspend-hospital", chain.other_hospital.address) == 0
    assert not chain.operator.is_active_hospital(chain.other_hospital.address)
    assert _cli(monkeypatch, second, "revoke-operator", chain.operator.address) == 0
    assert "holds no role; 1 admin(s) remain" in capsys.readouterr().out
    assert _cli(monkeypatch, chain.operator, "reinstate-hospital", chain.other_hospital.address) == 2
    assert "lacks the role OPERATOR_ROLE" in capsys.readouterr().err
    assert _cli(monkeypatch, second, "roles", second.address) == 0
    assert "DEFAULT_ADMIN_ROLE, OPERATOR_ROLE" in capsys.readouterr().out


def test_an_operator_without_the_admin_role_acts_but_grants_no_role(chain, monkeypatch, capsys):
    deputy = chain.consortium.account()
    assert _cli(monkeypatch, chain.operator, "grant-operator", deputy.address) == 0
    assert _cli(monkeypatch, deputy, "suspend-study", "0x" + chain.study_id.hex()) == 0
    assert _cli(monkeypatch, deputy, "grant-operator", deputy.address, "--admin") == 2
    assert "lacks the role DEFAULT_ADMIN_ROLE" in capsys.readouterr().err


def test_the_last_admin_can_neither_be_revoked_nor_renounce(chain, monkeypatch, capsys):
    operator = chain.operator
    assert operator.admin_count() == 1
    assert _cli(monkeypatch, operator, "revoke-operator", operator.address) == 2
    assert "last admin" in capsys.readouterr().err
    assert operator.roles_of(operator.address) == ["DEFAULT_ADMIN_ROLE", "OPERATOR_ROLE"]  # left as it was
    admin_role = operator.role_id("DEFAULT_ADMIN_ROLE")
    with pytest.raises(lg.ContractRejected, match="last admin") as caught:
        operator._transact(operator.consortium.functions.renounceRole(admin_role, operator.address))
    assert caught.value.error_name == "LastAdmin"
    second = chain.consortium.account()
    operator.grant_operator(second.address, admin=True)
    operator._transact(operator.consortium.functions.renounceRole(admin_role, operator.address))  # now allowed
    assert operator.admin_count() == 1 and second.has_role("DEFAULT_ADMIN_ROLE", second.address)
