"""What patients sign: consent grants, revocations and cancellations as EIP-712 typed data.

The hospital or the portal relays the signature (and pays the gas); the ConsentRegistry checks it against
the patient's consent key. The domain binds every signature to one registry on one chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account import Account

from contracts.ledger.deployment import Deployment

CONSENT_DOMAIN_NAME = "TwinLedger Consent"
CONSENT_DOMAIN_VERSION = "1"


@dataclass(frozen=True)
class SignedGrant:
    pseudonym: bytes
    study_id: bytes
    valid_from: int
    valid_until: int
    nonce: int
    deadline: int
    signature: bytes

    def as_struct(self) -> tuple:
        return (self.pseudonym, self.study_id, self.valid_from, self.valid_until, self.nonce, self.deadline)


@dataclass(frozen=True)
class SignedRevoke:
    pseudonym: bytes
    study_id: bytes
    nonce: int
    deadline: int
    signature: bytes

    def as_struct(self) -> tuple:
        return (self.pseudonym, self.study_id, self.nonce, self.deadline)


@dataclass(frozen=True)
class SignedCancel:
    pseudonym: bytes
    nonce: int
    deadline: int
    signature: bytes


def consent_domain(deployment: Deployment) -> dict:
    return {
        "name": CONSENT_DOMAIN_NAME,
        "version": CONSENT_DOMAIN_VERSION,
        "chainId": deployment.chain_id,
        "verifyingContract": deployment.consent_registry,
    }


GRANT_TYPES = {
    "Grant": [
        {"name": "pseudonym", "type": "bytes32"},
        {"name": "studyId", "type": "bytes32"},
        {"name": "validFrom", "type": "uint64"},
        {"name": "validUntil", "type": "uint64"},
        {"name": "nonce", "type": "uint64"},
        {"name": "deadline", "type": "uint64"},
    ]
}
REVOKE_TYPES = {
    "Revoke": [
        {"name": "pseudonym", "type": "bytes32"},
        {"name": "studyId", "type": "bytes32"},
        {"name": "nonce", "type": "uint64"},
        {"name": "deadline", "type": "uint64"},
    ]
}
CANCEL_TYPES = {
    "Cancel": [
        {"name": "pseudonym", "type": "bytes32"},
        {"name": "nonce", "type": "uint64"},
        {"name": "deadline", "type": "uint64"},
    ]
}


def sign_grant(
    patient_key: bytes | str,
    deployment: Deployment,
    *,
    pseudonym: bytes,
    study_id: bytes,
    valid_from: int,
    valid_until: int,
    nonce: int,
    deadline: int,
) -> SignedGrant:
    """The patient signs a consent grant (EIP-712) for a hospital or the portal to relay."""
    message = {
        "pseudonym": pseudonym,
        "studyId": study_id,
        "validFrom": valid_from,
        "validUntil": valid_until,
        "nonce": nonce,
        "deadline": deadline,
    }
    signed = Account.sign_typed_data(patient_key, consent_domain(deployment), GRANT_TYPES, message)
    return SignedGrant(pseudonym, study_id, valid_from, valid_until, nonce, deadline, bytes(signed.signature))


def sign_revoke(
    patient_key: bytes | str, deployment: Deployment, *, pseudonym: bytes, study_id: bytes, nonce: int, deadline: int
) -> SignedRevoke:
    """The patient signs a revocation (EIP-712) for a hospital or the portal to relay."""
    message = {"pseudonym": pseudonym, "studyId": study_id, "nonce": nonce, "deadline": deadline}
    signed = Account.sign_typed_data(patient_key, consent_domain(deployment), REVOKE_TYPES, message)
    return SignedRevoke(pseudonym, study_id, nonce, deadline, bytes(signed.signature))


def sign_cancel(patient_key: bytes | str, deployment: Deployment, *, pseudonym: bytes, nonce: int, deadline: int) -> SignedCancel:
    """The patient signs a request to void all their outstanding signatures."""
    message = {"pseudonym": pseudonym, "nonce": nonce, "deadline": deadline}
    signed = Account.sign_typed_data(patient_key, consent_domain(deployment), CANCEL_TYPES, message)
    return SignedCancel(pseudonym, nonce, deadline, bytes(signed.signature))
