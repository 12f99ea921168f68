"""The bulk consent read's own path (contracts/ledger/consent.py): calldata encoded by hand, raw eth_calls
several at once, the bitmap decoded by hand. Its answers must be the registry's, bit for bit: the encoding
against eth_abi's, and on anvil (where the calls go out in parallel) against one view call per pseudonym."""

from __future__ import annotations

import os
import random

import eth_abi
import pytest
from eth_account import Account

from contracts import ledger as lg
from contracts.ledger import consent
from federation.ids import Pseudonym
from deploy.consortium import funded_key

OWN_TYPES = ["bytes32", "address", "bytes32[]", "address[]"]


def _own_calldata(study: bytes, hospital: str, pseudonyms, keys) -> bytes:
    head = consent.OWN_CONSENT_BITMAP_SELECTOR + study + consent.address_word(hospital)
    return head + consent.abi_arrays(pseudonyms, keys, head_words=2)


@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 700])
def test_hand_encoded_calldata_is_eth_abis(n):
    study = os.urandom(32)
    pseudonyms = [Pseudonym(os.urandom(32)) for _ in range(n)]
    keys = [Account.create().address for _ in range(n)]
    keys = [k.lower() if i % 3 == 0 else k for i, k in enumerate(keys)]  # any letter case is an address
    hospital = Account.create().address
    assert _own_calldata(study, hospital, pseudonyms, keys) == consent.OWN_CONSENT_BITMAP_SELECTOR + eth_abi.encode(
        OWN_TYPES, [study, hospital, pseudonyms, keys])
    assert (consent.CONSENT_BITMAP_SELECTOR + study + consent.abi_arrays(pseudonyms, None, head_words=1)
            == consent.CONSENT_BITMAP_SELECTOR + eth_abi.encode(["bytes32", "bytes32[]"], [study, pseudonyms]))


@pytest.mark.parametrize("bad", ["0x" + "ab" * 19, "0x" + "zz" * 20, "ab" * 21, "0x0x" + "ab" * 19, "0x" + "ab" * 19 + " a",
                                 "0x" + "ab" * 21])
def test_a_malformed_consent_key_is_refused_not_encoded(bad):
    keys = [Account.create().address, bad, Account.create().address]
    with pytest.raises(ValueError, match="address"):
        consent.abi_arrays([os.urandom(32)] * 3, keys, head_words=2)


def test_a_pseudonym_of_another_length_is_refused_even_when_the_total_fits():
    with pytest.raises(ValueError, match="32 bytes"):
        consent.abi_arrays([os.urandom(31), os.urandom(33)], None, head_words=1)


class _Decoder(consent.ConsentCalls):
    def _reset_or(self, error):
        return error


@pytest.mark.parametrize("count", [1, 256, 257, 2048, 2000])
def test_hand_decoded_bitmap_is_the_abi_words_bits(count):
    rng = random.Random(count)
    words = [rng.getrandbits(256) for _ in range((count + 255) // 256)]
    raw = eth_abi.encode(["uint256[]"], [words])
    assert _Decoder()._bitmap(raw, count) == [bool((words[i >> 8] >> (i & 255)) & 1) for i in range(count)]
    for broken in (b"", raw[:-1], raw + bytes(32), eth_abi.encode(["uint256[]"], [words + [0]])):
        with pytest.raises(lg.LedgerError, match="does not decode"):
            _Decoder()._bitmap(broken, count)


@pytest.mark.slow
@pytest.mark.parametrize("chain", ["anvil"], indirect=True)
def test_parallel_raw_reads_on_anvil_equal_the_registrys_answer(chain, monkeypatch):
    """200 pseudonyms of this hospital (one in ten consenting; read with the key it stored, or another), 20 of
    another hospital with consent, 5 never enrolled; read in chunks of 32 that cut bitmap words, 4 at once."""
    patient = chain.ledger_for(funded_key(chain.w3, ether=10))
    own = [Pseudonym.new() for _ in range(200)]
    theirs = [Pseudonym.new() for _ in range(20)]
    everyone = own + theirs + [Pseudonym.new() for _ in range(5)]
    chain.hospital.enrol(own, [patient.address] * len(own))
    chain.other_hospital.enrol(theirs, [patient.address] * len(theirs))
    until = chain.w3.eth.get_block("latest")["timestamp"] + 86400
    granted = set(own[::10] + theirs[::4])
    for pseudonym in granted:
        patient.grant(pseudonym, chain.study_id, valid_from=0, valid_until=until)
    block = chain.hospital.block_number()
    random.Random(7).shuffle(everyone)
    stranger = Account.create().address
    keys = [stranger if i % 7 == 0 else patient.address for i in range(len(everyone))]
    consenting = [p in granted for p in everyone]
    own_read = [p in granted and p in own and keys[i] == patient.address for i, p in enumerate(everyone)]
    assert [chain.hospital.has_consent(p, chain.study_id, block=block) for p in everyone[:30]] == consenting[:30]

    assert consent._concurrent(chain.w3)
    monkeypatch.setattr(consent, "OWN_CONSENT_BATCH", 32)
    monkeypatch.setattr(consent, "CONSENT_BATCH", 32)
    assert chain.hospital.consents(chain.study_id, everyone, block=block, hospital=chain.hospital.address,
                                   keys=keys) == own_read
    assert chain.hospital.consents(chain.study_id, everyone, block=block) == consenting
    # The same question through web3's contract layer, in one call.
    words = chain.hospital.consent.functions.consentBitmapFor(
        chain.study_id, chain.hospital.address, everyone, keys).call(block_identifier=block)
    assert [bool((words[i >> 8] >> (i & 255)) & 1) for i in range(len(everyone))] == own_read


@pytest.mark.slow
@pytest.mark.parametrize("chain", ["anvil"], indirect=True)
def test_a_block_the_node_does_not_serve_is_the_ledger_clients_error_not_a_decoding_error(chain):
    pseudonyms = [Pseudonym.new() for _ in range(3)]
    with pytest.raises(lg.LedgerError) as raised:
        chain.hospital.consents(chain.study_id, pseudonyms, block=chain.hospital.block_number() + 1000)
    assert "does not decode" not in str(raised.value)
