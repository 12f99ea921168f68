"""Request and response models of every portal endpoint."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from eth_utils import is_checksum_address, to_checksum_address
from pydantic import BaseModel, Field, field_validator

from federation.web.errors import problem_responses
from federation.web.schemas import Message, Strict

__all__ = ["Message", "Strict"]  # the kit's, used by the routers

STUDY_ID_PATTERN = r"^0x[0-9a-fA-F]{64}$"
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
SIGNATURE_PATTERN = r"^0x[0-9a-fA-F]{130}$"
UINT64 = 2**64 - 1


# Every error answer of the API is the web kit's Problem (a readable `detail`, and `error` with its code).
ERRORS = problem_responses(400, 401, 403, 404, 409, 410, 413, 415, 429, 503, meaning={
    401: "not logged in (or a wrong staff token)", 403: "a wrong password or CSRF token",
    404: "no such study, round or change for this patient", 503: "the consent ledger cannot be reached"})


class EnrolmentCodeRequest(Strict):
    record_number: str = Field(min_length=1, max_length=64, description="the hospital's record number of the patient")


class EnrolmentCodeOut(BaseModel):
    code: str = Field(description="give this to the patient; it is shown only once")
    record_number: str
    expires_at: datetime


class RedeemRequest(Strict):
    code: str = Field(min_length=1, max_length=64)
    username: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{2,63}$",
                          description="3 to 64 characters: lower-case letters, digits, '.', '_' or '-'")
    password: str = Field(min_length=10, max_length=256)
    wallet_address: str | None = Field(
        default=None, pattern=ADDRESS_PATTERN,
        description="your own wallet's address (0x and 40 hex digits): your wallet then signs every change, and the "
                    "portal keeps no key for you. Leave it out to have the portal keep a key locked by your password")

    @field_validator("wallet_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if not value:
            return None
        if value[2:] != value[2:].lower() and value[2:] != value[2:].upper() and not is_checksum_address(value):
            raise ValueError("the address has mixed case but a wrong checksum (EIP-55): check it for a typo")
        if int(value, 16) == 0:
            raise ValueError("the zero address cannot be a consent key")
        return to_checksum_address(value)


class AccountOut(BaseModel):
    username: str
    pseudonym: str
    consent_address: str
    key_custody: Literal["portal", "wallet"] = Field(
        description="'portal': the portal keeps the key locked by your password; 'wallet': only your wallet holds it")
    hospital: str


class PasswordChange(Strict):
    password: str = Field(min_length=1, max_length=256, description="the current password")
    new_password: str = Field(min_length=10, max_length=256)


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class WithdrawalRequest(LoginRequest):
    study_id: str = Field(pattern=STUDY_ID_PATTERN, description="the study to withdraw from: 0x and 64 hex digits")


class SignedWithdrawalRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    study_id: str = Field(pattern=STUDY_ID_PATTERN, description="the study to withdraw from: 0x and 64 hex digits")
    nonce: int = Field(ge=0, le=UINT64)
    deadline: int = Field(ge=0, le=UINT64)
    signature: str = Field(pattern=SIGNATURE_PATTERN, description="the wallet's 65-byte signature, 0x-hex")


class SessionOut(BaseModel):
    username: str
    csrf_token: str = Field(description="send it back in the X-CSRF-Token header of every POST and DELETE")
    expires_at: datetime


class ConsentOut(BaseModel):
    granted: bool = Field(description="whether the consent holds now")
    valid_from: datetime | None
    valid_until: datetime | None


class ConsentChangeOut(BaseModel):
    granted: bool
    block: int


class HospitalOut(BaseModel):
    account: str
    name: str | None = Field(description="the hospital's name, when the portal knows it")
    this_hospital: bool


class StudyOut(BaseModel):
    study_id: str
    purpose_code: str
    purpose: str = Field(description="the purpose in plain language")
    task_id: str
    task: str = Field(description="what the model learns, in plain language")
    data_used: str = Field(description="which of your data it uses")
    hospitals: list[HospitalOut] = Field(description="the hospitals that accepted the study")
    epsilon_budget: float
    delta: float
    rounds: int
    ends_at: datetime
    suspended: bool
    consent: ConsentOut


class StudyDetailOut(StudyOut):
    history: list[ConsentChangeOut]


class GrantRequest(Strict):
    password: str = Field(min_length=1, max_length=256, description="your password, to unlock your consent key")
    valid_until: datetime | None = Field(default=None, description="when the consent ends (default: the study's end)")


class RevokeRequest(Strict):
    password: str = Field(min_length=1, max_length=256)


ChangeStatus = Literal["sent", "recorded", "failed"]


class ConsentChangeResult(BaseModel):
    study_id: str
    granted: bool = Field(description="the choice asked for: true to agree, false to withdraw")
    change_id: int = Field(description="follow it at GET /api/changes/{change_id}")
    status: ChangeStatus = Field(description="'recorded' once the chain holds it; 'sent' while it is on its way")
    block: int | None = Field(description="the block at which the chain recorded the change")
    consent: ConsentOut


class ChangeOut(BaseModel):
    change_id: int
    study_id: str
    action: Literal["grant", "revoke"]
    status: ChangeStatus
    block: int | None = Field(description="the block that recorded it")
    tx_hash: str | None
    reason: str | None = Field(description="why it failed")
    latest_block: int | None = Field(description="the chain's latest block when you asked")
    confirmations: int | None = Field(description="blocks since (and including) the recording block")
    on_chain: bool | None = Field(description="whether the chain, asked at that block, shows the choice")
    explanation: str = Field(description="what the status means, in plain language")


class Eip712Field(BaseModel):
    name: str
    type: str


class Eip712Domain(BaseModel):
    name: str
    version: str
    chainId: int
    verifyingContract: str
    salt: str  # 0x-hex bytes32: binds the signature to this deployment of the registry


class TypedDataOut(BaseModel):
    """EIP-712 typed data, as a wallet's eth_signTypedData_v4 takes it."""

    types: dict[str, list[Eip712Field]]
    primaryType: Literal["Grant", "Revoke"]
    domain: Eip712Domain
    message: dict[str, int | str]


class SignedGrantRequest(Strict):
    valid_from: int = Field(ge=0, le=UINT64)
    valid_until: int = Field(ge=0, le=UINT64)
    nonce: int = Field(ge=0, le=UINT64)
    deadline: int = Field(ge=0, le=UINT64)
    signature: str = Field(pattern=SIGNATURE_PATTERN, description="the wallet's 65-byte signature, 0x-hex")


class SignedRevokeRequest(Strict):
    nonce: int = Field(ge=0, le=UINT64)
    deadline: int = Field(ge=0, le=UINT64)
    signature: str = Field(pattern=SIGNATURE_PATTERN, description="the wallet's 65-byte signature, 0x-hex")


class RoundOut(BaseModel):
    round: int
    phases: list[str] = Field(description="'train' and/or 'evaluate'")
    pinned_block: int
    anchored_block: int | None
    model_hash: str | None


class RoundProofOut(RoundOut):
    """How to check a round against the chain: the anchor, and this hospital's commitment recomputed."""

    study_id: str
    chain_id: int
    consortium: str = Field(description="the Consortium contract that holds the anchor")
    hospital_account: str
    commitment_on_chain: str | None = Field(description="this hospital's commitment in the anchor")
    commitment_from_log: str = Field(description="the same, recomputed from the hospital's usage log")
    matches: bool = Field(description="whether the two are equal")
    explorer_url: str | None = Field(description="the anchoring block in a block explorer, when one is configured")
