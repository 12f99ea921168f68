"""The coordinator counts a reply for the hospital its signing key acts for at the round's pinned block (issue 14
item 5): after a hospital rotates its chain key, replies signed by the new key count for the same hospital and
replies signed by the old key count for nobody."""

from __future__ import annotations

import pytest

from coordinator.study_run import StudyRun
from tests.coordinator.test_study_run import FakeGrid, FakeHospital, options, superlink_identity  # noqa: F401

pytestmark = pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)  # ledger reads only: one chain


def test_replies_signed_by_the_new_key_count_for_the_hospital_and_the_old_keys_for_nobody(chain, tmp_path):
    hospital = chain.hospital.address
    new_key = chain.consortium.account()
    chain.hospital.rotate_hospital_key(new_key.signer)
    new = chain.ledger_for(new_key._key)
    nodes = {1: FakeHospital("alpha", new), 2: FakeHospital("stale", chain.hospital, claims=hospital)}
    run = StudyRun(FakeGrid(nodes), chain.coordinator, options(chain, num_rounds=1), tmp_path / "run")
    run.run()
    (anchor,) = chain.coordinator.round_anchors(chain.study_id)
    assert set(anchor.commitments) == {hospital}
    (record,) = run.report.rounds
    assert "not an active hospital's key" in record.errors["stale"]
    assert {r.hospital for r in record.replies} == {hospital}
