"""Ledger benchmark: the consent of 10,000 pseudonyms at one block on anvil, batched against one call each, and
the gas of the consent operations.

    twinledger bench ledger --json
"""

from __future__ import annotations

import random
import secrets
import tempfile
import time
from pathlib import Path

from eth_account import Account
from rich.console import Console
from rich.progress import track

from contracts import ledger as lg
from deploy.consortium import Consortium, chain_url

console = Console(stderr=True)


def bench_ledger(*, patients: int = 10_000, consent_share: float = 0.7, seed: int = 1) -> dict:
    """Learn the consent of `patients` pseudonyms at one block on anvil, batched and one call each."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as scratch, chain_url(None, log_path=Path(scratch) / "anvil.log") as url:
        consortium = Consortium.deploy(lg.connect(url), rpc_url=url)
        hospital = consortium.add_hospital()
        far = int(time.time()) + 365 * 24 * 3600
        study = consortium.propose_study(epsilon_budget=3, delta_exponent=5, rounds=5, ends_at=far)
        hospital.accept_study(study)
        patient = consortium.account()  # pays its own gas below

        pseudonyms = [lg.new_pseudonym() for _ in range(patients)]
        patient_keys = ["0x" + secrets.token_hex(32) for _ in range(patients)]
        for start in track(range(0, patients, lg.ENROL_BATCH), description="enrolling patients", console=console):
            chunk = slice(start, start + lg.ENROL_BATCH)
            hospital.enrol(pseudonyms[chunk], [Account.from_key(k).address for k in patient_keys[chunk]])
        consenting = [i for i in range(patients) if rng.random() < consent_share]
        grants = [
            lg.sign_grant(patient_keys[i], consortium.deployment, pseudonym=pseudonyms[i], study_id=study, valid_from=0,
                          valid_until=far, nonce=0, deadline=far)
            for i in track(consenting, description="patients signing consents", console=console)
        ]
        # The first 100 go in one transaction: the amortised gas of a hospital relaying signed grants.
        batch_receipt = hospital.relay_grants(grants[: lg.GRANT_BATCH])[0]
        amortised = batch_receipt["gasUsed"] / min(lg.GRANT_BATCH, len(grants))
        for start in track(range(lg.GRANT_BATCH, len(grants), lg.GRANT_BATCH), description="relaying consents",
                           console=console):
            hospital.relay_grants(grants[start : start + lg.GRANT_BATCH])
        block = hospital.block_number()

        started = time.perf_counter()
        batched = hospital.consents(study, pseudonyms, block=block)
        batched_s = time.perf_counter() - started
        started = time.perf_counter()
        single = [
            hospital.has_consent(p, study, block=block)
            for p in track(pseudonyms, description="one call per patient", console=console)
        ]
        single_calls_s = time.perf_counter() - started
        if batched != single:
            raise AssertionError("batched and single consent answers differ")
        if sum(batched) != len(consenting):
            raise AssertionError("the chain's answers do not match the consents given")

        # Gas of the single operations, from a patient who holds ether and one who signs.
        own = lg.new_pseudonym()
        hospital.enrol([own], [patient.address])
        grant_gas = patient.grant(own, study, valid_from=0, valid_until=far)["gasUsed"]
        revoke_gas = patient.revoke(own, study)["gasUsed"]
        signer = "0x" + secrets.token_hex(32)
        signed_pseudonym = lg.new_pseudonym()
        hospital.enrol([signed_pseudonym], [Account.from_key(signer).address])
        signed = lg.sign_grant(signer, consortium.deployment, pseudonym=signed_pseudonym, study_id=study, valid_from=0,
                               valid_until=far, nonce=0, deadline=far)
        signed_grant_gas = hospital.relay_grants([signed])[0]["gasUsed"]
    return {
        "benchmark": "ledger",
        "patients": patients,
        "consenting": len(consenting),
        "block": block,
        "batched_s": round(batched_s, 4),
        "single_calls_s": round(single_calls_s, 3),
        "speedup": round(single_calls_s / batched_s, 1),
        "answers_agree": True,
        "grant_gas": grant_gas,
        "signed_grant_gas": signed_grant_gas,
        "revoke_gas": revoke_gas,
        "amortised_grant_gas": round(amortised),
    }
