"""The consent gate's read by enrolment index (ConsentRegistry.enrolmentIndexes, consentBitmapOfIndexes;
contracts/ledger/consent_reads.py): an index is given only for this hospital's own binding of pseudonym and key,
a read by index answers what consentBitmapFor answers at the same block, and the batch sizes stay under the
30,000,000-gas eth_call cap in the worst case."""

from __future__ import annotations

import random

import pytest
from eth_account import Account

from contracts import ledger as lg
from contracts.ledger import consent_reads
from deploy.consortium import funded_key
from federation.ids import Pseudonym

ETH_CALL_GAS_CAP = 30_000_000
BATCHES = {"by_index": consent_reads.CONSENT_BY_INDEX_BATCH, "enrolment": consent_reads.ENROLMENT_INDEX_BATCH}


def _enrolled(chain, n: int = 6):
    """n pseudonyms this hospital enrolled with one patient key, two another hospital enrolled, one never."""
    patient = chain.ledger_for(funded_key(chain.w3, ether=10))
    own = [Pseudonym.new() for _ in range(n)]
    theirs = [Pseudonym.new() for _ in range(2)]
    chain.hospital.enrol(own, [patient.address] * n)
    chain.other_hospital.enrol(theirs, [patient.address] * 2)
    return patient, own, theirs, Pseudonym.new()


def _until(chain) -> int:
    return chain.w3.eth.get_block("latest")["timestamp"] + 86400


def test_an_index_is_given_only_for_this_hospitals_own_binding(chain):
    patient, own, theirs, never = _enrolled(chain)
    for pseudonym in own + theirs:
        patient.grant(pseudonym, chain.study_id, valid_from=0, valid_until=_until(chain))
    block = chain.hospital.block_number()
    stranger = Account.create().address
    pseudonyms = own + theirs + [never, own[0]]
    keys = [patient.address] * (len(own) + len(theirs) + 1) + [stranger]
    indexes = chain.hospital.enrolment_indexes(pseudonyms, keys, hospital=chain.hospital.address, block=block)
    first = indexes[0]
    assert first > 0 and indexes[:len(own)] == list(range(first, first + len(own)))  # enrolment order
    # Another hospital's patients (consenting), a pseudonym nobody enrolled, this hospital's own patient read with
    # another key: no index, so the index path never reads them as consenting.
    assert indexes[len(own):] == [0, 0, 0, 0]
    assert chain.hospital.consents_by_index(chain.study_id, indexes, block=block) == [True] * len(own) + [False] * 4
    assert chain.hospital.consents_by_index(chain.study_id, indexes, block=block) == chain.hospital.consents(
        chain.study_id, pseudonyms, block=block, hospital=chain.hospital.address, keys=keys)
    # The other hospital's own read sees its own two.
    theirs_read = chain.other_hospital.enrolment_indexes(theirs, [patient.address] * 2,
                                                         hospital=chain.other_hospital.address, block=block)
    assert all(theirs_read) and chain.other_hospital.consents_by_index(chain.study_id, theirs_read, block=block) == [
        True, True]


def test_a_revoked_consent_reads_false_by_index_after_the_revocation_and_true_before(chain):
    patient, own, _, _ = _enrolled(chain, 2)
    for pseudonym in own:
        patient.grant(pseudonym, chain.study_id, valid_from=0, valid_until=_until(chain))
    indexes = chain.hospital.enrolment_indexes(own, [patient.address] * 2, hospital=chain.hospital.address,
                                               block="latest")
    before = chain.hospital.block_number()
    patient.revoke(own[1], chain.study_id)
    after = chain.hospital.block_number()
    assert chain.hospital.consents_by_index(chain.study_id, indexes, block=before) == [True, True]
    assert chain.hospital.consents_by_index(chain.study_id, indexes, block=after) == [True, False]
    # The index was resolved after the revocation, and still reads the consent as it was at the earlier block.
    assert chain.hospital.enrolment_indexes(own, [patient.address] * 2, hospital=chain.hospital.address,
                                            block=before) == indexes


def test_an_index_beyond_the_patient_count_or_zero_reads_as_no_consent(chain):
    patient, own, _, _ = _enrolled(chain, 4)
    for pseudonym in own:
        patient.grant(pseudonym, chain.study_id, valid_from=0, valid_until=_until(chain))
    count = chain.hospital.consent.functions.patientCount().call()
    indexes = chain.hospital.enrolment_indexes(own, [patient.address] * 4, hospital=chain.hospital.address,
                                               block="latest")
    assert indexes[-1] == count - 2  # the other hospital's two came last
    probe = [0, indexes[-1], count + 1, count + 4, 2**32 - 1]
    assert chain.hospital.consents_by_index(chain.study_id, probe, block="latest") == [False, True, False, False, False]
    assert chain.hospital.consents_by_index(chain.study_id, [], block="latest") == []


@pytest.mark.parametrize("bad", [[-1], [2**32], [True], [1.5], [[1, 2]]])
def test_an_index_that_is_no_uint32_is_refused_before_any_call(bad):
    with pytest.raises(ValueError, match="index"):
        consent_reads._packed_indexes(bad)


def test_calldata_not_of_whole_uint32s_is_refused_by_the_registry(chain):
    data = (consent_reads.CONSENT_BY_INDEX_SELECTOR + chain.study_id + (64).to_bytes(32, "big")
            + (5).to_bytes(32, "big") + bytes(32))
    with pytest.raises(lg.ContractRejected, match="IndexesNotPacked"):
        chain.hospital._raw_call(data, "latest")


def test_registry_identity_names_the_deployment(chain):
    identity = chain.hospital.registry_identity()
    assert identity == chain.other_hospital.registry_identity() and len(identity) == 16
    import dataclasses

    redeployed = dataclasses.replace(chain.deployment, consent_domain_salt="0x" + "11" * 32)
    assert lg.Ledger(chain.w3, redeployed).registry_identity() != identity


@pytest.mark.slow
@pytest.mark.parametrize("chain", ["anvil"], indirect=True)
def test_reads_by_index_on_anvil_equal_the_registrys_own_read_and_fit_the_gas_cap(chain, monkeypatch):
    """600 patients of this hospital (one in seven consenting), read in chunks that cut bitmap words, several at
    once; then the worst case of each call (two cold reads per pseudonym; each index in a word of its own),
    measured with eth_estimateGas at two sizes and extrapolated to the batch sizes."""
    patient = chain.ledger_for(funded_key(chain.w3, ether=10))
    own = [Pseudonym.new() for _ in range(600)]
    chain.hospital.enrol(own, [patient.address] * len(own))
    granted = own[::7]
    patient.relay_grants([lg.sign_grant(patient._key, chain.deployment, pseudonym=p, study_id=chain.study_id,
                                        valid_from=0, valid_until=_until(chain), nonce=0, deadline=_until(chain))
                          for p in granted])
    block = chain.hospital.block_number()
    shuffled = own[:]
    random.Random(3).shuffle(shuffled)
    keys = [patient.address] * len(shuffled)
    monkeypatch.setattr(consent_reads, "ENROLMENT_INDEX_BATCH", 96)
    monkeypatch.setattr(consent_reads, "CONSENT_BY_INDEX_BATCH", 80)
    indexes = chain.hospital.enrolment_indexes(shuffled, keys, hospital=chain.hospital.address, block=block)
    assert chain.hospital.consents_by_index(chain.study_id, indexes, block=block) == chain.hospital.consents(
        chain.study_id, shuffled, block=block, hospital=chain.hospital.address, keys=keys)
    assert sum(chain.hospital.consents_by_index(chain.study_id, indexes, block=block)) == len(granted)

    registry = chain.hospital.consent.functions
    count = registry.patientCount().call()

    def gas(fn) -> int:
        return fn.estimate_gas({"from": chain.hospital.address}, block_identifier=block)

    def by_index(n: int) -> int:  # n indexes, 4 apart: each in a storage word of its own
        return gas(registry.consentBitmapOfIndexes(chain.study_id, consent_reads._packed_indexes(
            range(count, count - 4 * n, -4))))

    def enrolment(n: int) -> int:
        return gas(registry.enrolmentIndexes(chain.hospital.address, own[:n], [patient.address] * n))

    for measure in (by_index, enrolment):
        batch = BATCHES[measure.__name__]
        small, large = measure(64), measure(128)
        worst = large + (large - small) / 64 * (batch - 128)
        print(f"{measure.__name__}: {small} gas for 64, {large} for 128: about {worst / 1e6:.1f} M for {batch}")
        assert worst < 0.8 * ETH_CALL_GAS_CAP
