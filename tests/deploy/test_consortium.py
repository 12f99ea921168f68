"""The consortium builder (deploy/consortium.py) on the in-process chain: what the demo, the benchmarks and
the fixtures build with it holds on chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.consortium import Consortium, chain_url, eth_tester
from deploy.demo import DATA_DIR
from federation.ids import StudyId


@pytest.fixture
def consortium(artifacts) -> Consortium:
    consortium = Consortium.deploy(eth_tester(), artifacts=artifacts, ether=10)
    consortium.add_coordinator()
    return consortium


def _few_patients(tmp_path: Path, count: int = 12) -> Path:
    path = tmp_path / "cleveland-few.csv"
    path.write_text("\n".join((DATA_DIR / "processed.cleveland.data").read_text().splitlines()[:count]) + "\n")
    return path


def test_a_node_with_enrolled_patients_joins_an_open_study_and_its_patients_consent(consortium, tmp_path):
    node = consortium.add_node("cleveland", tmp_path / "node", records=[_few_patients(tmp_path)])
    assert node.imports[0].imported == 12 and len(node.patients.pseudonyms) == 12
    enrolled = node.enrol()
    study = consortium.open_study(epsilon_budget=3.0, rounds=2)
    assert isinstance(study, StudyId)
    assert node.ledger.is_study_live_for(study, node.ledger.address)
    block = node.ledger.block_number()
    pseudonyms = [node.patients.pseudonym(n) for n in enrolled]
    assert node.ledger.consents(study, pseudonyms, block=block) == [True] * len(enrolled)


def test_a_second_study_uses_each_patients_next_nonce_and_a_revocation_holds(consortium, tmp_path):
    node = consortium.add_node("cleveland", tmp_path / "node", records=[_few_patients(tmp_path, 4)])
    first, second = node.enrol()[:2]
    consortium.open_study(rounds=1)
    study = consortium.propose_study(rounds=1)
    node.accept(study)
    node.consent(study, [first, second])  # signed with nonce 1: the first study took nonce 0
    node.revoke(study, first)
    block = node.ledger.block_number()
    assert node.ledger.consents(study, [node.patients.pseudonym(first), node.patients.pseudonym(second)],
                                block=block) == [False, True]


def test_a_hospital_without_a_node_is_registered_and_a_given_chain_is_used_as_it_is(consortium, tmp_path):
    hospital = consortium.add_hospital(node_id=b"\x05" * 32)
    study = consortium.propose_study()
    hospital.accept_study(study)
    assert hospital.is_study_live_for(study, hospital.address)
    with chain_url("http://127.0.0.1:1", log_path=tmp_path / "unused.log") as url:
        assert url == "http://127.0.0.1:1"
    assert not (tmp_path / "unused.log").exists()  # no anvil was started
