"""The auditor verifies the hospitals' signed replies the coordinator's report keeps (issue 11): an honest
round passes, and a forged or swapped signature, an anchored hospital that signed nothing, a commitment it
did not sign and a model it did not evaluate are violations. No node: usage logs with empty pseudonym sets."""

from __future__ import annotations

import json
import secrets

import pytest

from contracts import ledger as lg
from contracts.audit import audit_study
from federation import protocol
from federation.commitment import combined_commitment, pseudonym_commitment
from federation.ids import Digest, StudyId, hex0x
from federation.protocol import RoundReply

EMPTY = pseudonym_commitment([])
MODEL = Digest(b"\x05" * 32)


def _reply(chain, block: int, phase: str, **changes) -> RoundReply:
    values = dict(study_id=StudyId(chain.study_id), round=1, pinned_block=block, phase=phase,
                  model_digest=MODEL if phase == "evaluate" else Digest(b"\x04" * 32),
                  reply_digest=Digest(b"\x06" * 32), num_examples=0, commitment=EMPTY,
                  epsilon_milli=protocol.epsilon_milli(0.5) if phase == "train" else 0)
    return RoundReply(**{**values, **changes})


def _stored(signer, reply: RoundReply, *, hospital: str | None = None) -> dict:
    return {"hospital": hospital or signer.address, "node": "alpha", "reply": reply.as_dict(),
            "signature": hex0x(signer.sign_round_reply(reply))}


def _usage_log(chain, block: int) -> dict:
    entries = [{"study_id": str(StudyId(chain.study_id)), "round": 1, "phase": phase, "block": block,
                "commitment": str(EMPTY), "pseudonyms": []} for phase in ("train", "evaluate")]
    return {chain.hospital.address: {"hospital": "alpha", "account": chain.hospital.address, "entries": entries}}


@pytest.fixture
def anchored(chain):
    """Round 1 anchored for the hospital with empty sets in both phases, at a pinned block."""
    block = chain.coordinator.block_number()
    chain.coordinator.anchor_round(chain.study_id, 1, pinned_block=block, model_hash=MODEL,
                                   commitments={chain.hospital.address: combined_commitment(EMPTY, EMPTY)})
    return block


def _audit(chain, block, replies):
    report = {"rounds": [{"round": 1, "replies": replies}]}
    return audit_study(lg.Ledger(chain.w3, chain.deployment), chain.study_id, _usage_log(chain, block), report=report)


def test_honest_signed_replies_pass_the_audit(chain, anchored, tmp_path):
    replies = [_stored(chain.hospital, _reply(chain, anchored, phase)) for phase in ("train", "evaluate")]
    result = _audit(chain, anchored, replies)
    assert result.violations == 0 and result.signatures_checked == 2, result.findings
    path = tmp_path / "report.json"  # the report as a file, as `twinledger` would pass it
    path.write_text(json.dumps({"rounds": [{"round": 1, "replies": replies}]}))
    auditor = lg.Ledger(chain.w3, chain.deployment)
    assert audit_study(auditor, chain.study_id, _usage_log(chain, anchored), report=path).violations == 0


def test_a_forged_reply_signature_is_a_violation(chain, anchored):
    """A coordinator that anchors a commitment for a hospital and stores a reply it signed itself."""
    forger = chain.ledger_for("0x" + secrets.token_hex(32))
    replies = [_stored(forger, _reply(chain, anchored, phase), hospital=chain.hospital.address)
               for phase in ("train", "evaluate")]
    result = _audit(chain, anchored, replies)
    assert result.violations >= 3  # two forged replies, and the anchored hospital signed nothing
    assert any(f"is not signed by it (the signature recovers to {forger.address})" in f for f in result.findings)
    assert any("which signed no reply in the round" in f for f in result.findings)


def test_a_reply_changed_after_signing_is_a_violation(chain, anchored):
    stored = _stored(chain.hospital, _reply(chain, anchored, "train"))
    stored["reply"]["num-examples"] = 10_000
    result = _audit(chain, anchored, [stored, _stored(chain.hospital, _reply(chain, anchored, "evaluate"))])
    assert result.violations >= 1 and any("is not signed by it" in f for f in result.findings)


def test_an_anchored_commitment_or_model_the_hospital_did_not_sign_is_a_violation(chain, anchored):
    other = pseudonym_commitment([b"\x01" * 32])
    replies = [_stored(chain.hospital, _reply(chain, anchored, "train", commitment=other)),
               _stored(chain.hospital, _reply(chain, anchored, "evaluate", model_digest=Digest(b"\x09" * 32)))]
    result = _audit(chain, anchored, replies)
    assert any("is not the one its signed replies hold" in f for f in result.findings)
    assert any("evaluated model" in f for f in result.findings)


def test_a_reply_for_another_round_is_a_violation(chain, anchored):
    replies = [_stored(chain.hospital, _reply(chain, anchored - 1, phase)) for phase in ("train", "evaluate")]
    result = _audit(chain, anchored, replies)
    assert any("not the anchored round" in f for f in result.findings)
    assert any("which signed no reply in the round" in f for f in result.findings)


def test_without_a_report_the_audit_checks_no_signature(chain, anchored):
    result = audit_study(lg.Ledger(chain.w3, chain.deployment), chain.study_id, _usage_log(chain, anchored))
    assert result.violations == 0 and result.signatures_checked == 0
