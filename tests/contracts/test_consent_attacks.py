"""Attacks on the consent registry from issue 12, each as the attacker would try it (on both test chains).

- front-running a hospital's enrolment to hijack its patients or to block it (item 1);
- a grant signed ahead, relayed after a relayed revocation (item 8);
- one signature relayed ahead of a hospital's batch (item 9), and a replayed or forged one in a batch of
  revocations (issue 15: withdrawals relayed many to a transaction);
- a signature made for an earlier deployment at the same address, after a chain reset (item 10);
- deeply nested JSON in a process that imported the ledger (item 2, the recursion limit).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time

import pytest
from eth_account import Account

from contracts import ledger as lg
from federation.ids import Pseudonym

FAR = int(time.time()) + 365 * 24 * 3600


def _patients(n):
    keys = ["0x" + secrets.token_hex(32) for _ in range(n)]
    return [Pseudonym.new() for _ in range(n)], keys


def _addresses(keys):
    return [Account.from_key(k).address for k in keys]


def _grant(chain, key, pseudonym, *, nonce=0):
    return lg.sign_grant(key, chain.deployment, pseudonym=pseudonym, study_id=chain.study_id, valid_from=0,
                         valid_until=FAR, nonce=nonce, deadline=FAR)


def _enrol_directly(ledger, pseudonyms, keys):
    """An enrolment sent the way the attacker sends it: straight to `enrol`, no commitment of its own."""
    return ledger._transact(ledger.consent.functions.enrol(list(pseudonyms), list(keys)))


# ---- item 1: front-running enrolment ----


def test_attack_front_run_enrolment_without_a_commitment_is_refused(chain):
    """Hospital B copies the pseudonyms of A's pending enrolment and sends them first, with keys B holds."""
    pseudonyms, keys = _patients(3)
    attacker_keys = _addresses(_patients(3)[1])
    with pytest.raises(lg.ContractRejected) as refused:
        _enrol_directly(chain.other_hospital, pseudonyms, attacker_keys)
    assert refused.value.error_name == "EnrolmentNotCommitted"
    # A's own enrolment is untouched: every patient is A's, with the key A meant.
    chain.hospital.enrol(pseudonyms, _addresses(keys))
    for pseudonym, key in zip(pseudonyms, _addresses(keys)):
        assert chain.hospital.consent.functions.enrolledBy(pseudonym).call() == chain.hospital.address
        assert chain.hospital.consent.functions.patientOf(pseudonym).call()[0] == key


def test_attack_front_run_enrolment_with_a_copied_commitment_is_refused(chain):
    """B copies A's commitment (it sees it on chain) and then A's pending enrolment: the commitment names A."""
    pseudonyms, keys = _patients(2)
    addresses = _addresses(keys)
    commitment = chain.hospital.enrolment_commitment(pseudonyms, addresses)
    chain.hospital._transact(chain.hospital.consent.functions.commitEnrolment(commitment))
    chain.other_hospital._transact(chain.other_hospital.consent.functions.commitEnrolment(commitment))
    with pytest.raises(lg.ContractRejected) as refused:
        _enrol_directly(chain.other_hospital, pseudonyms, addresses)
    assert refused.value.error_name == "EnrolmentNotCommitted"
    _enrol_directly(chain.hospital, pseudonyms, addresses)
    assert chain.hospital.consent.functions.enrolledBy(pseudonyms[0]).call() == chain.hospital.address


def test_the_clients_enrolment_commitment_is_the_registrys(chain):
    pseudonyms, keys = _patients(2)
    fn = chain.hospital.consent.functions
    assert fn.enrolmentCommitment(chain.hospital.address, pseudonyms, _addresses(keys)).call() == \
        chain.hospital.enrolment_commitment(pseudonyms, _addresses(keys))
    # The hospital's own enrolment without a commitment is refused too, in the domain's words.
    with pytest.raises(lg.ContractRejected, match="was not made by this hospital in an earlier block") as refused:
        _enrol_directly(chain.hospital, pseudonyms, _addresses(keys))
    assert refused.value.error_name == "EnrolmentNotCommitted"


def test_attack_repeated_front_running_cannot_block_a_hospitals_enrolment(chain):
    """Before the fix B's front-run made A's whole batch revert, again and again; now A enrols every time."""
    for _ in range(2):
        pseudonyms, keys = _patients(4)
        with pytest.raises(lg.ContractRejected):
            _enrol_directly(chain.other_hospital, pseudonyms[:1], _addresses(_patients(1)[1]))
        chain.hospital.enrol(pseudonyms, _addresses(keys))
        assert {chain.hospital.consent.functions.enrolledBy(p).call() for p in pseudonyms} == {chain.hospital.address}


def test_attack_hijacked_pseudonym_never_reads_as_consenting_for_the_hospital_that_holds_the_record(chain):
    """Should B ever enrol a pseudonym of A's first (say it leaked from A's database) and sign a grant with
    its own key, A's question (hospital A, the key A stored) answers no; the plain question still yes."""
    (pseudonym,), _ = _patients(1)
    (attacker_key,) = _patients(1)[1]
    chain.other_hospital.enrol([pseudonym], _addresses([attacker_key]))
    chain.other_hospital.relay_grants([_grant(chain, attacker_key, pseudonym)])
    block = chain.hospital.block_number()
    (stored_key,) = _addresses(_patients(1)[1])  # the key A's node stored for its patient
    assert chain.hospital.consents(chain.study_id, [pseudonym], block=block) == [True]
    assert chain.hospital.consents(chain.study_id, [pseudonym], block=block, hospital=chain.hospital.address,
                                   keys=[stored_key]) == [False]
    # Even with the attacker's key, A did not enrol it.
    assert chain.hospital.consents(chain.study_id, [pseudonym], block=block, hospital=chain.hospital.address,
                                   keys=_addresses([attacker_key])) == [False]


def test_own_consents_need_the_enrolling_hospital_and_the_stored_key(chain):
    pseudonyms, keys = _patients(3)
    chain.hospital.enrol(pseudonyms, _addresses(keys))
    chain.hospital.relay_grants([_grant(chain, k, p) for p, k in zip(pseudonyms, keys)])
    block = chain.hospital.block_number()
    stored = _addresses(keys)
    own = lambda hospital, keys: chain.hospital.consents(chain.study_id, pseudonyms, block=block, hospital=hospital, keys=keys)
    assert own(chain.hospital.address, stored) == [True, True, True]
    assert own(chain.hospital.address, [stored[0], stored[0], stored[2]]) == [True, False, True]
    assert own(chain.other_hospital.address, stored) == [False, False, False]
    with pytest.raises(ValueError, match="one consent key per pseudonym"):
        chain.hospital.consents(chain.study_id, pseudonyms, block=block, hospital=chain.hospital.address, keys=stored[:1])


# ---- item 8: every revocation voids outstanding signatures ----


def test_attack_grant_signed_ahead_is_void_after_a_relayed_revocation(chain):
    pseudonyms, keys = _patients(1)
    (pseudonym,), (key,) = pseudonyms, keys
    chain.hospital.enrol(pseudonyms, _addresses(keys))
    chain.hospital.relay_grants([_grant(chain, key, pseudonym, nonce=0)])
    ahead = _grant(chain, key, pseudonym, nonce=2)  # signed ahead, held by somebody
    revoke = lg.sign_revoke(key, chain.deployment, pseudonym=pseudonym, study_id=chain.study_id, nonce=1, deadline=FAR)
    receipt = chain.hospital.relay_revoke(revoke)
    (cancelled,) = chain.hospital.consent.events.SignaturesCancelled().process_receipt(receipt)
    assert cancelled.args.nextNonce == 2**32
    with pytest.raises(lg.ContractRejected, match="replayed or out of order"):
        chain.other_hospital.relay_grants([ahead])
    assert not chain.hospital.has_consent(pseudonym, chain.study_id)


# ---- item 9: a signature relayed ahead does not sink a batch ----


def test_attack_one_pre_relayed_signature_does_not_revert_the_batch(chain):
    pseudonyms, keys = _patients(3)
    chain.hospital.enrol(pseudonyms, _addresses(keys))
    grants = [_grant(chain, k, p) for p, k in zip(pseudonyms, keys)]
    chain.other_hospital.relay_grants([grants[1]])  # anybody holding the signature relays it first
    receipts = chain.hospital.relay_grants(grants)
    assert chain.hospital.skipped_grants(receipts) == [(pseudonyms[1], 0)]
    granted = chain.hospital.consent.events.ConsentGranted().process_receipt(receipts[0])
    assert [Pseudonym(e.args.pseudonym) for e in granted] == [pseudonyms[0], pseudonyms[2]]
    assert chain.hospital.consents(chain.study_id, pseudonyms, block=chain.hospital.block_number()) == [True] * 3


def test_a_voided_signature_in_a_batch_is_skipped_and_a_forged_one_still_reverts_it(chain):
    pseudonyms, keys = _patients(2)
    chain.hospital.enrol(pseudonyms, _addresses(keys))
    grants = [_grant(chain, k, p) for p, k in zip(pseudonyms, keys)]
    chain.hospital.relay_cancel(lg.sign_cancel(keys[0], chain.deployment, pseudonym=pseudonyms[0], nonce=0, deadline=FAR))
    forged = _grant(chain, "0x" + secrets.token_hex(32), pseudonyms[1])
    with pytest.raises(lg.ContractRejected, match="not the patient's"):
        chain.hospital.relay_grants([grants[0], forged])
    receipts = chain.hospital.relay_grants(grants)
    assert chain.hospital.skipped_grants(receipts) == [(pseudonyms[0], 0)]
    assert chain.hospital.consents(chain.study_id, pseudonyms, block=chain.hospital.block_number()) == [False, True]


def _revoke(chain, key, pseudonym, *, nonce=1, deadline=FAR):
    return lg.sign_revoke(key, chain.deployment, pseudonym=pseudonym, study_id=chain.study_id, nonce=nonce,
                          deadline=deadline)


def test_attack_a_replayed_or_forged_revocation_in_a_batch_is_refused_and_the_others_are_recorded(chain):
    """A batch of withdrawals must not be held back by one bad signature: a replayed revocation (its nonce
    spent), a forged one, one signed ahead, an expired one and one for an unknown pseudonym are each skipped
    with their reason, and every valid withdrawal in the batch is recorded."""
    pseudonyms, keys = _patients(6)
    chain.hospital.enrol(pseudonyms, _addresses(keys))
    chain.hospital.relay_grants([_grant(chain, k, p) for p, k in zip(pseudonyms, keys)])
    replayed = _revoke(chain, keys[1], pseudonyms[1])
    chain.other_hospital.relay_revokes([replayed])  # relayed once: the copy in the batch is a replay
    chain.hospital.relay_grants([_grant(chain, keys[1], pseudonyms[1], nonce=2**32)])  # granted again since
    past = chain.hospital.block_timestamp() - 1
    unknown = Pseudonym.new()
    batch = [_revoke(chain, keys[0], pseudonyms[0]), replayed,
             _revoke(chain, "0x" + secrets.token_hex(32), pseudonyms[2]),  # forged: not the patient's key
             _revoke(chain, keys[3], pseudonyms[3], nonce=7),  # signed ahead of the patient's nonce
             _revoke(chain, keys[4], pseudonyms[4], deadline=past),
             _revoke(chain, keys[5], unknown),
             _revoke(chain, keys[5], pseudonyms[5])]
    receipts = chain.hospital.relay_revokes(batch)
    assert len(receipts) == 1
    assert chain.hospital.skipped_revocations(receipts) == [
        (pseudonyms[1], 1, "NonceSpent"), (pseudonyms[2], 1, "WrongSigner"), (pseudonyms[3], 7, "WrongNonce"),
        (pseudonyms[4], 1, "Expired"), (unknown, 1, "UnknownPseudonym")]
    revoked = chain.hospital.consent.events.ConsentRevoked().process_receipt(receipts[0])
    assert [Pseudonym(e.args.pseudonym) for e in revoked] == [pseudonyms[0], pseudonyms[5]]
    block = chain.hospital.block_number()
    assert chain.hospital.consents(chain.study_id, pseudonyms, block=block) == [False, True, True, True, True, False]
    # Each revocation used voids what its patient signed ahead, as a single relayed one does.
    with pytest.raises(lg.ContractRejected, match="replayed or out of order"):
        chain.other_hospital.relay_grants([_grant(chain, keys[0], pseudonyms[0], nonce=2)])


# ---- item 2: the recursion limit after importing the ledger ----


def test_attack_deep_json_after_importing_the_ledger_raises_recursion_error_instead_of_crashing():
    """py_ecc (imported through eth-account) raises the recursion limit to 100,000; a JSON nested 100,000 deep
    then overflowed the C stack (exit -11) before Python could raise RecursionError."""
    depth = 100_000
    script = (
        "import json, sys\n"
        "import contracts.ledger\n"
        "import eth_account, web3  # again: nothing may raise the limit back\n"
        "assert sys.getrecursionlimit() <= contracts.ledger.SANE_RECURSION_LIMIT, sys.getrecursionlimit()\n"
        f"text = '[' * {depth} + ']' * {depth}\n"
        "try:\n"
        "    json.loads(text)\n"
        "except RecursionError:\n"
        "    print('RecursionError')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "RecursionError"
    json.loads("[" * 200 + "]" * 200)  # ordinary nesting still parses


# ---- item 10: a redeploy at the same address ----


def _fresh_deployment(artifacts, operator_key, hospital_key, pseudonym, patient_address):
    """A fresh in-process chain where the same operator deploys the registry (same chain id, same nonce)."""
    from deploy.consortium import eth_tester

    w3 = eth_tester()
    for key in (operator_key, hospital_key):
        lg.fund_from_dev_account(w3, Account.from_key(key).address, ether=10)
    deployment = lg.deploy(w3, operator_key, artifacts=artifacts)
    lg.Ledger(w3, deployment, account_key=operator_key).register_hospital(Account.from_key(hospital_key).address, b"\x01" * 32)
    hospital = lg.Ledger(w3, deployment, account_key=hospital_key)
    hospital.enrol([pseudonym], [patient_address])
    return hospital


def test_attack_signature_from_an_earlier_deployment_at_the_same_address_is_refused(artifacts):
    operator_key, hospital_key, patient_key = ("0x" + secrets.token_hex(32) for _ in range(3))
    pseudonym = Pseudonym.new()
    patient = Account.from_key(patient_key).address
    old = _fresh_deployment(artifacts, operator_key, hospital_key, pseudonym, patient)
    signed = lg.sign_grant(patient_key, old.deployment, pseudonym=pseudonym, study_id=b"\x07" * 32, valid_from=0,
                           valid_until=FAR, nonce=0, deadline=FAR)
    new = _fresh_deployment(artifacts, operator_key, hospital_key, pseudonym, patient)
    assert new.deployment.consent_registry == old.deployment.consent_registry  # the same address, chain id
    with pytest.raises(lg.ContractRejected, match="not the patient's"):
        new.relay_grants([signed])


def test_the_registry_signs_in_the_deployments_salted_domain(chain):
    """What the contract checks is what every signer builds from the Deployment: its salt included."""
    from eth_account.messages import encode_typed_data
    from contracts.ledger.signing import GRANT_TYPES, consent_domain

    registry = chain.hospital.consent.functions
    grant = {"pseudonym": b"\x01" * 32, "studyId": b"\x02" * 32, "validFrom": 0, "validUntil": 1, "nonce": 0,
             "deadline": 1}
    expected = encode_typed_data(consent_domain(chain.deployment), GRANT_TYPES, grant).header
    assert registry.domainSeparator().call() == expected
    fields, name, version, chain_id, contract, salt, _ = registry.eip712Domain().call()
    assert (fields, name, version, chain_id, contract) == (b"\x1f", lg.CONSENT_DOMAIN_NAME, lg.CONSENT_DOMAIN_VERSION,
                                                           chain.deployment.chain_id, chain.deployment.consent_registry)
    assert "0x" + salt.hex() == chain.deployment.consent_domain_salt != "0x" + "00" * 32


def test_a_deployment_file_without_the_domain_salt_is_refused_with_a_reason(chain, tmp_path):
    """A deployment file from before item 10 names a registry whose signatures are not bound to it: redeploy."""
    old = {k: v for k, v in chain.deployment.__dict__.items() if k != "consent_domain_salt"}
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(old))
    with pytest.raises(lg.LedgerError, match="deploy the contracts again"):
        lg.Deployment.load(path)
