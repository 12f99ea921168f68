"""Request and response models of every portal endpoint."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

STUDY_ID_PATTERN = r"^0x[0-9a-fA-F]{64}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class AccountOut(BaseModel):
    username: str
    pseudonym: str
    consent_address: str
    hospital: str


class PasswordChange(Strict):
    password: str = Field(min_length=1, max_length=256, description="the current password")
    new_password: str = Field(min_length=10, max_length=256)


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class SessionOut(BaseModel):
    username: str
    csrf_token: str = Field(description="send it back in the X-CSRF-Token header of every POST and DELETE")
    expires_at: datetime


class Message(BaseModel):
    detail: str


class ConsentOut(BaseModel):
    granted: bool = Field(description="whether the consent holds now")
    valid_from: datetime | None
    valid_until: datetime | None


class ConsentChangeOut(BaseModel):
    granted: bool
    block: int


class StudyOut(BaseModel):
    study_id: str
    purpose_code: str
    purpose: str = Field(description="the purpose in plain language")
    task_id: str
    task: str
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


class ConsentChangeResult(BaseModel):
    study_id: str
    granted: bool
    block: int = Field(description="the block at which the chain recorded the change")
    consent: ConsentOut


class RoundOut(BaseModel):
    round: int
    phases: list[str] = Field(description="'train' and/or 'evaluate'")
    pinned_block: int
    anchored_block: int | None
    model_hash: str | None
