"""A hospital node on the test chain, shared by the node's and the audit's tests (imported, not a conftest:
tests/conftest.py holds the chain; this is one hospital on it)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
import torch
from eth_account import Account

from contracts import ledger as lg
from federation.ids import Pseudonym, StudyId
from federation.protocol import RoundConfig
from federation.tasks import get_task
from node import admin
from node.service import HospitalNode
from node.store import Store

DATA = Path(__file__).resolve().parents[2] / "deploy" / "data" / "heart-disease"
FAR = int(time.time()) + 365 * 24 * 3600


class Hospital:
    """A node with 40 Cleveland patients imported and enrolled, 80 % of them consenting.

    Few patients keep the in-process chain quick: it verifies every relayed signature in Python.
    """

    def __init__(self, chain, home: Path):
        self.chain = chain
        self.settings = admin.init_node(home, hospital="cleveland", rpc_url="unused", deployment_file=None)
        records = home / "cleveland-40.csv"
        records.write_text("\n".join((DATA / "processed.cleveland.data").read_text().splitlines()[:40]) + "\n")
        admin.import_records(self.settings, records)
        self.store = Store(self.settings.resolved_database_url)
        self.keys = {p.record_number: "0x" + secrets.token_hex(32) for p in self.store.patients()}
        admin.enrol_patients(self.settings, chain.hospital, {n: Account.from_key(k).address for n, k in self.keys.items()})
        self.pseudonyms = {p.record_number: Pseudonym.parse(p.pseudonym) for p in self.store.patients()}
        numbers = sorted(self.keys)
        self.consenting = numbers[: int(len(numbers) * 0.8)]
        grants = [
            lg.sign_grant(self.keys[n], chain.deployment, pseudonym=self.pseudonyms[n], study_id=chain.study_id,
                          valid_from=0, valid_until=FAR, nonce=0, deadline=FAR)
            for n in self.consenting
        ]
        chain.hospital.relay_grants(grants)
        self.node = HospitalNode(self.settings, ledger=chain.hospital)

    @property
    def study(self) -> str:
        """The chain's study id as the node's store writes it."""
        return str(StudyId(self.chain.study_id))

    def config(self, round_number: int, block: int | None = None, study_id: bytes | None = None) -> RoundConfig:
        return RoundConfig(study_id=study_id or self.chain.study_id, round=round_number,
                           block=self.chain.hospital.block_number() if block is None else block, local_epochs=1)

    def revoke(self, number: str) -> int:
        pseudonym = self.pseudonyms[number]
        revoke = lg.sign_revoke(self.keys[number], self.chain.deployment, pseudonym=pseudonym, study_id=self.chain.study_id,
                                nonce=self.chain.hospital.patient_nonce(pseudonym), deadline=FAR)
        return self.chain.hospital.relay_revoke(revoke)["blockNumber"]

    def consented_in(self, cohort: str, numbers) -> set[str]:
        return {str(self.pseudonyms[p.record_number]) for p in self.store.candidates(cohort) if p.record_number in numbers}

    def uses_nothing(self) -> None:
        assert self.store.usage() == []
        assert self.store.spends(self.study) == []


def fresh_state():
    torch.manual_seed(0)
    return get_task("heart-disease/v1").build_model().state_dict()


@pytest.fixture
def hospital(chain, tmp_path):
    return Hospital(chain, tmp_path / "cleveland")
