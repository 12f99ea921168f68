"""Consent read benchmark: the consent of up to 1,000,000 pseudonyms read at one pinned block on anvil, as the
node's consent gate reads it (part of `twinledger bench load --json`): every round by enrolment index
(`Ledger.consents_by_index`), after a first read that resolves the indexes (`Ledger.enrolment_indexes`).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from eth_account import Account
from eth_utils import keccak

from contracts import ledger as lg
from contracts.devchain.anvil import start_anvil
from contracts.ledger.consent import OWN_CONSENT_BATCH, abi_arrays, address_word
from contracts.ledger.consent_reads import (
    CONSENT_BY_INDEX_BATCH, CONSENT_READERS, ENROLMENT_INDEX_BATCH, _packed_indexes, consent_by_index_call,
)
from deploy import processes
from deploy.consortium import Consortium
from federation.ids import Pseudonym

DAY_S = 86400


# Set-up only: one enrol transaction per 5,000 patients, on an anvil with a 2e9 block gas limit that keeps the
# state of the last 64 blocks only (with full history its memory grew by about 125 MB per such block: 12 GB at
# 700,000 patients). The read is at the newest block, which it keeps.
ENROL_PER_TX = 5000


# The read of every round is timed this many times and the median reported (the machine is shared).
READS = 3

ENROL_SELECTOR = keccak(text="enrol(bytes32[],address[])")[:4]
COMMIT_SELECTOR = keccak(text="commitEnrolment(bytes32)")[:4]


def _send_data(ledger: lg.Ledger, data: bytes, key: str, *, gas: int) -> dict:
    """One set-up transaction with a known gas limit (no estimate: its batches are far above the default cap)."""
    w3 = ledger.w3
    tx = {"from": ledger.address, "to": ledger.consent.address, "data": data, "gas": gas, "value": 0,
          "chainId": ledger.deployment.chain_id, "nonce": w3.eth.get_transaction_count(ledger.address, "pending"),
          "gasPrice": w3.eth.gas_price}
    tx_hash = w3.eth.send_raw_transaction(Account.sign_transaction(tx, key).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=600)
    if receipt["status"] != 1:
        raise RuntimeError(f"set-up transaction {tx_hash.hex()} reverted")
    return receipt


def _calls_only_s(ledger: lg.Ledger, study: bytes, indexes: list[int], block: int) -> float:
    """The read by index with its calldata encoded beforehand and the answers left undecoded: the chain's share."""
    packed = _packed_indexes(indexes)
    step = 4 * CONSENT_BY_INDEX_BATCH
    calls = [consent_by_index_call(study, packed[at:at + step]) for at in range(0, len(packed), step)]
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONSENT_READERS) as pool:
        list(pool.map(lambda data: ledger._raw_call(data, block), calls))
    return time.perf_counter() - began


def consent_read(*, points: tuple[int, ...] = (10_000, 100_000, 1_000_000), granted: int = 1000,
                 work: Path | None = None) -> dict:
    """Enrol max(points) pseudonyms on a fresh anvil in batches of ENROL_PER_TX (`granted` of them consent,
    signed and relayed in the ledger client's batches), pin one block, and time the node's consent gate's chain
    reads: once the first read of all of them (`enrolment_indexes`, then `consents_by_index`), then for the first
    n pseudonyms, for each n of `points`, the read of every later round (`consents_by_index` of the stored
    indexes; the median of READS reads). Also timed once for all: the chain's share of that read, and the read
    by binding the gate made before (`Ledger.consents` with the hospital and keys: consentBitmapFor)."""
    total = max(points)
    with tempfile.TemporaryDirectory() as scratch:
        work = work or Path(scratch)
        port = processes.free_port()
        anvil, url = start_anvil(port=port, log_path=work / "anvil.log",
                                 extra_args=("--gas-limit", "2000000000", "--prune-history", "64"))
        try:
            started = time.perf_counter()
            consortium = Consortium.deploy(lg.connect(url, timeout_s=600), rpc_url=url)
            key = "0x" + os.urandom(32).hex()
            lg.fund_from_dev_account(consortium.w3, Account.from_key(key).address, ether=1000)
            consortium.operator.register_hospital(Account.from_key(key).address, os.urandom(32))
            hospital = lg.Ledger(consortium.w3, consortium.deployment, account_key=key, receipt_timeout_s=600)
            study = consortium.propose_study(ends_at=int(time.time()) + 365 * DAY_S)
            hospital.accept_study(study)
            pseudonyms = [Pseudonym(os.urandom(32)) for _ in range(total)]
            patient_keys = ["0x" + os.urandom(32).hex() for _ in range(granted)]
            keys = [Account.from_key(k).address for k in patient_keys]
            keys += [Account.from_key(os.urandom(32)).address] * (total - granted)  # one key may serve many
            batches = [(pseudonyms[i:i + ENROL_PER_TX], keys[i:i + ENROL_PER_TX]) for i in range(0, total, ENROL_PER_TX)]
            for batch in batches:
                commitment = keccak(address_word(hospital.address) + abi_arrays(*batch, head_words=1))
                _send_data(hospital, COMMIT_SELECTOR + commitment, key, gas=200_000)
            for batch in batches:
                _send_data(hospital, ENROL_SELECTOR + abi_arrays(*batch, head_words=0), key,
                           gas=60_000 * len(batch[0]) + 1_000_000)
            enrolled_s = time.perf_counter() - started
            far = int(time.time()) + 300 * DAY_S
            hospital.relay_grants([
                lg.sign_grant(k, consortium.deployment, pseudonym=pseudonyms[i], study_id=study, valid_from=0,
                              valid_until=far, nonce=0, deadline=far) for i, k in enumerate(patient_keys)])
            setup_s = time.perf_counter() - started
            block = hospital.block_number()
            began = time.perf_counter()
            indexes = hospital.enrolment_indexes(pseudonyms, keys, hospital=hospital.address, block=block)
            first = hospital.consents_by_index(study, indexes, block=block)
            first_s = time.perf_counter() - began
            if sum(first) != granted or not all(indexes):
                raise RuntimeError(f"the first read found {sum(first)} consenting, expected {granted}")
            figures: dict = {}
            for n in sorted(points):
                times = []
                for _ in range(READS):
                    began = time.perf_counter()
                    answer = hospital.consents_by_index(study, indexes[:n], block=block)
                    times.append(time.perf_counter() - began)
                figures[n] = statistics.median(times)
                if sum(answer) != min(n, granted):
                    raise RuntimeError(f"the consent read of {n} pseudonyms found {sum(answer)} consenting, "
                                       f"expected {min(n, granted)}")
            calls_only_s = _calls_only_s(hospital, study, indexes, block)
            began = time.perf_counter()
            by_binding = hospital.consents(study, pseudonyms, block=block, hospital=hospital.address, keys=keys)
            binding_s = time.perf_counter() - began
            if by_binding != first:
                raise RuntimeError("the read by binding and the read by index differ")
        finally:
            anvil.stop()
    label = {10_000: "10k", 100_000: "100k", 1_000_000: "1m"}
    return {
        **{f"consent_read_{label.get(n, n)}_s": round(seconds, 3) for n, seconds in figures.items()},
        "consent_read_per_100k_s": {label.get(n, str(n)): round(seconds / n * 100_000, 3)
                                    for n, seconds in figures.items()},
        f"consent_read_{label.get(total, total)}_calls_only_s": round(calls_only_s, 3),
        f"consent_read_{label.get(total, total)}_first_s": round(first_s, 3),
        f"consent_read_{label.get(total, total)}_by_binding_s": round(binding_s, 3),
        "consent_read_setup_s": round(setup_s, 1),
        "consent_read_enrol_s": round(enrolled_s, 1),
        "consent_read_indexes_per_call": CONSENT_BY_INDEX_BATCH,
        "consent_read_first_pseudonyms_per_call": ENROLMENT_INDEX_BATCH,
        "consent_read_by_binding_pseudonyms_per_call": OWN_CONSENT_BATCH,
    }
