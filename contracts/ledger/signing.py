"""What patients and hospitals sign, as EIP-712 typed data.

Patients sign consent grants, revocations and cancellations: the hospital or the portal relays the signature
(and pays the gas); the ConsentRegistry checks it against the patient's consent key. The domain binds every
signature to one deployment of the registry: its chain, its address and its random salt (a registry redeployed
at the same address after a chain reset has another salt, so the old signatures are void there).

Hospitals sign their replies in each round (:class:`federation.protocol.RoundReply`): the coordinator and the
auditor recover the signer off chain. Their domain ("TwinLedger Round", bound to the consortium) differs from
the consent domain, so a reply signature can never pass for a consent signature, nor the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account import Account
from eth_account.messages import encode_typed_data

from contracts.ledger.deployment import Deployment
from federation.protocol import RoundReply

CONSENT_DOMAIN_NAME = "TwinLedger Consent"
CONSENT_DOMAIN_VERSION = "1"
ROUND_DOMAIN_NAME = "TwinLedger Round"
ROUND_DOMAIN_VERSION = "1"


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


CONSENT_DOMAIN_TYPES = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
    {"name": "salt", "type": "bytes32"},
]


def consent_domain(deployment: Deployment) -> dict:
    """The consent registry's EIP-712 domain (fields as in CONSENT_DOMAIN_TYPES; the salt as 0x-hex)."""
    return {
        "name": CONSENT_DOMAIN_NAME,
        "version": CONSENT_DOMAIN_VERSION,
        "chainId": deployment.chain_id,
        "verifyingContract": deployment.consent_registry,
        "salt": deployment.consent_domain_salt,
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


def round_domain(deployment: Deployment) -> dict:
    return {
        "name": ROUND_DOMAIN_NAME,
        "version": ROUND_DOMAIN_VERSION,
        "chainId": deployment.chain_id,
        "verifyingContract": deployment.consortium,
    }


ROUND_REPLY_TYPES = {
    "RoundReply": [
        {"name": "studyId", "type": "bytes32"},
        {"name": "round", "type": "uint32"},
        {"name": "pinnedBlock", "type": "uint64"},
        {"name": "phase", "type": "uint8"},  # 1 train, 2 evaluate
        {"name": "modelDigest", "type": "bytes32"},  # model hash of the weights the node received
        {"name": "replyDigest", "type": "bytes32"},  # model hash of the weights it sends / digest of its metrics
        {"name": "numExamples", "type": "uint64"},
        {"name": "commitment", "type": "bytes32"},  # its commitment to the pseudonyms it used in the phase
        {"name": "epsilonMilli", "type": "uint64"},  # epsilon spent x 1000 (infinite: uint64 max)
    ]
}


def sign_round_reply(hospital_key: bytes | str, deployment: Deployment, reply: RoundReply) -> bytes:
    """The hospital signs its reply in one phase of a round (65-byte signature)."""
    signed = Account.sign_typed_data(hospital_key, round_domain(deployment), ROUND_REPLY_TYPES, reply.typed_message())
    return bytes(signed.signature)


def recover_round_reply(deployment: Deployment, reply: RoundReply, signature: bytes) -> str:
    """The account that signed `reply` (checksummed); ValueError when the signature is malformed.

    Any change to the reply (an inflated example count, other weights, another round) recovers another
    account: compare the result with the hospital the reply must come from.
    """
    try:
        return Account.recover_message(
            encode_typed_data(round_domain(deployment), ROUND_REPLY_TYPES, reply.typed_message()),
            signature=bytes(signature),
        )
    except Exception as exc:  # noqa: BLE001 - eth-account raises several types for a bad signature
        raise ValueError(f"the reply signature is malformed: {exc}") from exc
