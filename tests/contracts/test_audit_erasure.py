"""The audit of usage-log entries a node redacted when it erased a patient (node/erase.py): the stored commitment
must still match the anchor, the remaining patients are checked on chain as before, the erased ones are reported
apart; an altered commitment or a redaction checked at another block is a violation, never an erased use."""

from __future__ import annotations

import time

from contracts import ledger as lg
from contracts.audit import audit_study
from federation.commitment import combined_commitment, pseudonym_commitment
from federation.ids import Pseudonym, StudyId

FAR = int(time.time()) + 365 * 24 * 3600


def _consented(chain, count: int) -> list[Pseudonym]:
    """`count` pseudonyms enrolled by the hospital, each consenting to the study."""
    from eth_account import Account

    keys = [Account.create() for _ in range(count)]
    pseudonyms = [Pseudonym.new() for _ in keys]
    chain.hospital.enrol(pseudonyms, [k.address for k in keys])
    chain.hospital.relay_grants([lg.sign_grant(k.key, chain.deployment, pseudonym=p, study_id=chain.study_id,
                                               valid_from=0, valid_until=FAR, nonce=0, deadline=FAR)
                                 for k, p in zip(keys, pseudonyms)])
    return pseudonyms


def _log(chain, block: int, commitment: bytes, remaining: list[Pseudonym], redacted: list[dict]) -> dict:
    entry = {"study_id": str(StudyId(chain.study_id)), "round": 1, "phase": "train", "block": block,
             "commitment": str(commitment), "pseudonyms": [str(p) for p in remaining], "status": "completed",
             "redacted": redacted}
    return {chain.hospital.address: {"hospital": "cleveland", "account": chain.hospital.address, "entries": [entry]}}


def test_a_redacted_entry_matches_its_anchor_by_its_stored_commitment_and_lies_are_found(chain):
    pseudonyms = _consented(chain, 3)
    block = chain.hospital.block_number()
    commitment = pseudonym_commitment(pseudonyms)
    chain.coordinator.anchor_round(chain.study_id, 1, pinned_block=block, model_hash=b"\x01" * 32,
                                   commitments={chain.hospital.address: combined_commitment(commitment, b"")})
    auditor = lg.Ledger(chain.w3, chain.deployment)
    erased = [{"block": block, "verified_at": "2026-11-30T13:00:00+00:00"}]

    honest = audit_study(auditor, chain.study_id, _log(chain, block, commitment, pseudonyms[1:], erased))
    assert (honest.violations, honest.commitment_mismatches, honest.checked, honest.erased_uses) == (0, 0, 2, 1)
    assert honest.unverified == 0 and honest.unanchored == []
    assert "uses of erased patients, consent verified at erasure: 1" in honest.findings[-1]

    altered = audit_study(auditor, chain.study_id,
                          _log(chain, block, pseudonym_commitment(pseudonyms[1:]), pseudonyms[1:], erased))
    assert altered.violations == 1 and any("does not match the anchored commitment" in f for f in altered.findings)

    elsewhere = [{"block": block - 1, "verified_at": "2026-11-30T13:00:00+00:00"}]
    moved = audit_study(auditor, chain.study_id, _log(chain, block, commitment, pseudonyms[1:], elsewhere))
    assert moved.violations == 1 and any(f"verified at block {block - 1}" in f for f in moved.findings)
