"""Consent read benchmark: the consent of up to 1,000,000 pseudonyms read at one pinned block on anvil, as the
node's consent gate reads it (part of `twinledger bench load --json`).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from eth_account import Account
from eth_utils import keccak

from contracts import ledger as lg
from contracts.devchain.anvil import start_anvil
from contracts.ledger.consent import OWN_CONSENT_BATCH, OWN_CONSENT_BITMAP_SELECTOR, abi_arrays, address_word
from deploy import processes
from deploy.consortium import Consortium
from federation.ids import Pseudonym

DAY_S = 86400


# Set-up only: one enrol transaction per 5,000 patients, on an anvil with a 2e9 block gas limit that keeps the
# state of the last 64 blocks only (with full history its memory grew by about 125 MB per such block: 12 GB at
# 700,000 patients). The read is at the newest block, which it keeps.
ENROL_PER_TX = 5000


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


def _own_call(study: bytes, hospital: str, pseudonyms: list[bytes], keys: list[str]) -> bytes:
    """abi.encode(bytes32 studyId, address hospital, bytes32[], address[]): consentBitmapFor's arguments."""
    return bytes(study) + address_word(hospital) + abi_arrays(pseudonyms, keys, head_words=2)


def consent_read(*, points: tuple[int, ...] = (10_000, 100_000, 1_000_000), granted: int = 1000,
                 work: Path | None = None) -> dict:
    """Enrol max(points) pseudonyms on a fresh anvil in batches of ENROL_PER_TX (`granted` of them consent,
    signed and relayed in the ledger client's batches), pin one block, and time the hospital's own consent read
    (`Ledger.consents` with the hospital and keys: consentBitmapFor, OWN_CONSENT_BATCH pseudonyms per eth_call,
    the node's consent gate's call) for the first n pseudonyms, for each n of `points`."""
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
            figures: dict = {}
            for n in sorted(points):
                began = time.perf_counter()
                answer = hospital.consents(study, pseudonyms[:n], block=block, hospital=hospital.address,
                                           keys=keys[:n])
                figures[n] = time.perf_counter() - began
                if n == total:  # the same eth_calls with the calldata encoded by hand: what is the chain's share
                    began = time.perf_counter()
                    for start in range(0, n, OWN_CONSENT_BATCH):
                        data = OWN_CONSENT_BITMAP_SELECTOR + _own_call(
                            study, hospital.address, pseudonyms[start:start + OWN_CONSENT_BATCH],
                            keys[start:start + OWN_CONSENT_BATCH])
                        hospital.w3.eth.call({"to": hospital.consent.address, "data": data}, block)
                    calls_only_s = time.perf_counter() - began
                if sum(answer) != min(n, granted):
                    raise RuntimeError(f"the consent read of {n} pseudonyms found {sum(answer)} consenting, "
                                       f"expected {min(n, granted)}")
        finally:
            anvil.stop()
    label = {10_000: "10k", 100_000: "100k", 1_000_000: "1m"}
    return {
        **{f"consent_read_{label.get(n, n)}_s": round(seconds, 3) for n, seconds in figures.items()},
        "consent_read_per_100k_s": {label.get(n, str(n)): round(seconds / n * 100_000, 3)
                                    for n, seconds in figures.items()},
        f"consent_read_{label.get(total, total)}_calls_only_s": round(calls_only_s, 3),
        "consent_read_setup_s": round(setup_s, 1),
        "consent_read_enrol_s": round(enrolled_s, 1),
        "consent_read_pseudonyms_per_call": OWN_CONSENT_BATCH,
    }


