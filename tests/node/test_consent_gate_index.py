"""The consent gate's read by enrolment index (node/consent_gate.py `consented`): each candidate's index is
resolved once, at a round's pinned block, from this hospital's own binding of pseudonym and key, stored with the
deployment and block it was verified on, and used from then on while that block is still this chain's. A
pseudonym another hospital enrolled, or enrolled with another key, never reads as consenting; an index cached
under another deployment, or on a block the chain no longer has, is resolved again; failures refuse."""

from __future__ import annotations

import pytest
from eth_account import Account
from sqlalchemy import create_engine, inspect, text
from sqlmodel import select

from contracts import ledger as lg
from deploy.consortium import funded_key
from federation import protocol
from federation.ids import Pseudonym
from node.consent_gate import ConsentGate, Refusal
from node.store import Patient, Store


class _Setting:
    def __init__(self, chain, tmp_path):
        self.chain = chain
        self.store = Store(f"sqlite:///{tmp_path / 'node.db'}")
        self.patient = chain.ledger_for(funded_key(chain.w3, ether=10))
        self.gate = ConsentGate(chain.hospital, self.store, None, hospital_account=chain.hospital.address)
        self.until = chain.w3.eth.get_block("latest")["timestamp"] + 86400

    def add(self, number: str, *, enrolled_by=None, key=None, stored_key=None, grant=True) -> Pseudonym:
        pseudonym = Pseudonym.new()
        if enrolled_by is not None:
            enrolled_by.enrol([pseudonym], [key or self.patient.address])
            if grant:
                self.patient.grant(pseudonym, self.chain.study_id, valid_from=0, valid_until=self.until)
        with self.store.session() as session:
            session.add(Patient(record_number=number, pseudonym=str(pseudonym), cohort="train", clinical=b"sealed",
                                consent_key=stored_key or key or self.patient.address))
            session.commit()
        return pseudonym

    def rows(self) -> dict[str, Patient]:
        with self.store.session() as session:
            return {p.record_number: p for p in session.exec(select(Patient))}

    def cache(self, number: str, index: int | None, of: str | None) -> None:
        with self.store.session() as session:
            row = session.exec(select(Patient).where(Patient.record_number == number)).one()
            row.registry_index, row.registry_index_of = index, of
            session.add(row)
            session.commit()

    def consented(self, block: int | None = None) -> set[str]:
        block = self.chain.hospital.block_number() if block is None else block
        return {p.record_number for p in self.gate.consented(self.chain.study_id, block, cohort="train")}


@pytest.fixture
def setting(chain, tmp_path) -> _Setting:
    return _Setting(chain, tmp_path)


def test_only_this_hospitals_own_binding_reads_as_consenting_and_its_index_is_stored(setting):
    chain = setting.chain
    setting.add("own-1", enrolled_by=chain.hospital)
    setting.add("own-2", enrolled_by=chain.hospital)
    setting.add("theirs", enrolled_by=chain.other_hospital)  # consenting, but another hospital's enrolment
    setting.add("other-key", enrolled_by=chain.hospital, stored_key=Account.create().address)
    setting.add("never")  # a key stored, nothing on chain
    assert setting.consented() == {"own-1", "own-2"}
    rows = setting.rows()
    assert rows["own-1"].registry_index and rows["own-2"].registry_index == rows["own-1"].registry_index + 1
    assert rows["own-1"].registry_index_of.startswith(setting.gate._reader_identity() + "@")
    assert all(rows[n].registry_index is None for n in ("theirs", "other-key", "never"))
    assert setting.consented() == {"own-1", "own-2"}  # the second read, by the stored indexes


def test_a_later_round_reads_by_the_stored_indexes_and_resolves_only_new_patients(setting, monkeypatch):
    chain = setting.chain
    setting.add("own-1", enrolled_by=chain.hospital)
    assert setting.consented() == {"own-1"}
    asked: list[int] = []
    resolve = chain.hospital.enrolment_indexes
    monkeypatch.setattr(chain.hospital, "enrolment_indexes",
                        lambda pseudonyms, keys, **kw: asked.append(len(pseudonyms)) or resolve(pseudonyms, keys, **kw))
    assert setting.consented() == {"own-1"} and asked == []
    setting.add("own-2", enrolled_by=chain.hospital)
    assert setting.consented() == {"own-1", "own-2"} and asked == [1]


def test_an_index_cached_under_another_deployment_is_not_used_but_resolved_again(setting):
    chain = setting.chain
    setting.add("own", enrolled_by=chain.hospital, grant=False)  # not consenting
    setting.add("theirs", enrolled_by=chain.other_hospital)  # consenting
    assert setting.consented() == set()
    theirs_index = chain.other_hospital.enrolment_indexes(
        [Pseudonym.parse(setting.rows()["theirs"].pseudonym)], [setting.patient.address],
        hospital=chain.other_hospital.address, block="latest")[0]
    block = chain.hospital.block_number()
    # An index from another registry (a redeployment, a reset chain) that here names a consenting patient.
    setting.cache("own", theirs_index, f"{'ab' * 8}@{block}:{chain.hospital.block_hash(block)[2:18]}")
    assert setting.consented() == set()
    assert setting.rows()["own"].registry_index == theirs_index - 1  # resolved again: its own index
    # The same on this registry, but verified on a block this chain no longer has (restarted from older state).
    identity = setting.gate._reader_identity()
    setting.cache("own", theirs_index, f"{identity}@{block}:{'00' * 8}")
    assert setting.consented() == set()
    assert setting.rows()["own"].registry_index == theirs_index - 1
    setting.cache("own", theirs_index, f"{identity}@{block + 10**6}:{'00' * 8}")  # a block the chain never had
    assert setting.consented() == set()


def test_a_revocation_reads_by_index_at_the_pinned_block(setting):
    chain = setting.chain
    setting.add("staying", enrolled_by=chain.hospital)
    pseudonym = setting.add("leaving", enrolled_by=chain.hospital)
    before = chain.hospital.block_number()
    assert setting.consented(before) == {"staying", "leaving"}  # indexes stored
    setting.patient.revoke(pseudonym, chain.study_id)
    after = chain.hospital.block_number()
    assert setting.consented(after) == {"staying"}
    assert setting.consented(before) == {"staying", "leaving"}


@pytest.mark.parametrize("failure, code", [
    (lg.ChainUnavailable("the chain cannot be reached"), protocol.CHAIN_UNAVAILABLE),
    (lg.ChainReset("the chain was reset"), protocol.CHAIN_RESET),
    (lg.LedgerError("garbled"), protocol.CONSENT_UNCLEAR),
])
@pytest.mark.parametrize("step", ["enrolment_indexes", "consents_by_index"])
def test_a_failed_read_refuses_with_its_code(setting, monkeypatch, failure, code, step):
    chain = setting.chain
    setting.add("own", enrolled_by=chain.hospital)
    if step == "consents_by_index":
        setting.consented()  # the index is known: the failure is the read by index

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(chain.hospital, step, fail)
    with pytest.raises(Refusal) as refused:
        setting.consented()
    assert refused.value.code == code


@pytest.mark.parametrize("step", ["enrolment_indexes", "consents_by_index"])
def test_an_answer_of_the_wrong_length_refuses_as_unclear(setting, monkeypatch, step):
    chain = setting.chain
    setting.add("own-1", enrolled_by=chain.hospital)
    setting.add("own-2", enrolled_by=chain.hospital)
    answer = [1] if step == "enrolment_indexes" else [True]
    monkeypatch.setattr(chain.hospital, step, lambda *args, **kwargs: answer)
    with pytest.raises(Refusal) as refused:
        setting.consented()
    assert refused.value.code == protocol.CONSENT_UNCLEAR


def test_a_0003_database_upgrades_to_hold_the_registry_index(tmp_path):
    from alembic import command

    from federation.migrations import _config, current_revision, head, migrate
    from node.migrations import NODE_SCHEMA

    engine = create_engine(f"sqlite:///{tmp_path / 'node.db'}")
    with engine.begin() as connection:
        command.upgrade(_config(NODE_SCHEMA, connection), "0003")
        connection.execute(text(
            "INSERT INTO patient (record_number, pseudonym, consent_key, cohort, kind, source, clinical, imported_at) "
            "VALUES ('H1-1', '0x01', '0x02', 'train', 'heart-disease', 'csv', x'00', '2026-01-01 00:00:00')"))
    migrate(engine, NODE_SCHEMA)
    assert current_revision(engine) == head(NODE_SCHEMA)
    assert {"registry_index", "registry_index_of"} <= {c["name"] for c in inspect(engine).get_columns("patient")}
    (row,) = Store(f"sqlite:///{tmp_path / 'node.db'}").patients()
    assert (row.record_number, row.registry_index, row.registry_index_of) == ("H1-1", None, None)


def test_past_the_limit_of_verification_blocks_every_candidate_is_resolved_again(setting, monkeypatch):
    from node import consent_gate

    chain = setting.chain
    setting.add("first", enrolled_by=chain.hospital)
    assert setting.consented() == {"first"}
    setting.add("second", enrolled_by=chain.hospital)
    assert setting.consented() == {"first", "second"}
    rows = setting.rows()
    assert rows["first"].registry_index_of != rows["second"].registry_index_of  # verified at two blocks
    monkeypatch.setattr(consent_gate, "MAX_VERIFICATIONS", 1)
    assert setting.consented() == {"first", "second"}
    rows = setting.rows()
    assert rows["first"].registry_index_of == rows["second"].registry_index_of  # both again, under one block


def test_an_index_verified_for_another_hospital_account_is_not_used(setting):
    """The same node.db read for another hospital (a node home pointed at another account): the indexes stored
    for the first hospital's binding are resolved again, and its patients do not consent for the other."""
    chain = setting.chain
    setting.add("own", enrolled_by=chain.hospital)
    assert setting.consented() == {"own"}
    setting.gate = ConsentGate(chain.hospital, setting.store, None, hospital_account=chain.other_hospital.address)
    assert setting.consented() == set()
