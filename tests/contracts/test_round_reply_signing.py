"""Signed round replies (issue 11): a hospital's EIP-712 signature over what it answers in a round, recovered
off chain by the coordinator and the auditor. No chain needed: the domain is the deployment's."""

from __future__ import annotations

import dataclasses
import math

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from contracts import ledger as lg
from contracts.ledger.signing import GRANT_TYPES, consent_domain
from federation import protocol
from federation.ids import Digest, StudyId
from federation.protocol import RoundReply

DEPLOYMENT = lg.Deployment(chain_id=31337, consortium="0x" + "11" * 20, consent_registry="0x" + "22" * 20,
                           consent_domain_salt="0x" + "33" * 32, deployed_block=1, abis={})
KEY = "0x" + "42" * 32


def reply(**changes) -> RoundReply:
    values = dict(study_id=StudyId(b"\x01" * 32), round=2, pinned_block=77, phase="train",
                  model_digest=Digest(b"\x02" * 32), reply_digest=Digest(b"\x03" * 32), num_examples=120,
                  commitment=Digest(b"\x04" * 32), epsilon_milli=protocol.epsilon_milli(0.75))
    return RoundReply(**{**values, **changes})


def test_the_signer_is_recovered_from_a_signed_reply():
    signature = lg.sign_round_reply(KEY, DEPLOYMENT, reply())
    assert lg.recover_round_reply(DEPLOYMENT, reply(), signature) == Account.from_key(KEY).address


@pytest.mark.parametrize("change", [
    {"num_examples": 12_000}, {"round": 3}, {"pinned_block": 78}, {"phase": "evaluate"},
    {"model_digest": Digest(b"\x09" * 32)}, {"reply_digest": Digest(b"\x09" * 32)},
    {"commitment": Digest(b"\x09" * 32)}, {"epsilon_milli": 1}, {"study_id": StudyId(b"\x09" * 32)},
])
def test_an_inflated_count_or_any_other_change_recovers_another_account(change):
    signature = lg.sign_round_reply(KEY, DEPLOYMENT, reply())
    assert lg.recover_round_reply(DEPLOYMENT, reply(**change), signature) != Account.from_key(KEY).address


def test_a_reply_signature_is_bound_to_its_chain_and_consortium():
    signature = lg.sign_round_reply(KEY, DEPLOYMENT, reply())
    other_chain = dataclasses.replace(DEPLOYMENT, chain_id=1)
    other_consortium = dataclasses.replace(DEPLOYMENT, consortium="0x" + "33" * 20)
    for deployment in (other_chain, other_consortium):
        assert lg.recover_round_reply(deployment, reply(), signature) != Account.from_key(KEY).address


def test_the_round_domain_is_not_the_consent_domain():
    """A reply signature cannot be replayed as a consent grant: the two domains differ by name."""
    assert lg.ROUND_DOMAIN_NAME != lg.CONSENT_DOMAIN_NAME
    grant = {"pseudonym": b"\x01" * 32, "studyId": b"\x01" * 32, "validFrom": 0, "validUntil": 2,
             "nonce": 0, "deadline": 77}
    signature = lg.sign_round_reply(KEY, DEPLOYMENT, reply())
    recovered = Account.recover_message(encode_typed_data(consent_domain(DEPLOYMENT), GRANT_TYPES, grant),
                                        signature=signature)
    assert recovered != Account.from_key(KEY).address


def test_a_malformed_signature_is_a_value_error():
    with pytest.raises(ValueError, match="malformed"):
        lg.recover_round_reply(DEPLOYMENT, reply(), b"\x01" * 10)


def test_a_round_reply_travels_as_a_config_record_and_as_json():
    infinite = reply(epsilon_milli=protocol.epsilon_milli(math.inf))
    for value in (reply(), infinite):
        assert RoundReply.from_record(value.to_record()) == value
        assert RoundReply.from_dict(value.as_dict()) == value
    assert infinite.epsilon_milli == 2**64 - 1
    with pytest.raises(ValueError, match="phase"):
        reply(phase="query")
    with pytest.raises(ValueError, match="num_examples"):
        reply(num_examples=-1)
    with pytest.raises(ValueError, match="malformed round reply"):
        RoundReply.from_dict({"round": 1})


def test_the_metrics_digest_is_canonical():
    metrics = {"num-examples": 4, "correct": 3, "loss-sum": 2.0000000001}
    assert protocol.metrics_digest(metrics) == protocol.metrics_digest(dict(reversed(list(metrics.items()))))
    assert protocol.metrics_digest(metrics) != protocol.metrics_digest({**metrics, "correct": 4})
    assert protocol.metrics_digest(metrics) != protocol.metrics_digest({**metrics, "loss-sum": 2.0})


def test_a_ledger_signs_with_its_own_account_key(chain):
    signature = chain.hospital.sign_round_reply(reply())
    assert lg.recover_round_reply(chain.deployment, reply(), signature) == chain.hospital.address
    with pytest.raises(lg.LedgerError, match="read-only"):
        lg.Ledger(chain.w3, chain.deployment).sign_round_reply(reply())


