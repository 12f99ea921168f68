"""Request and response models of every console endpoint."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from federation.web.errors import Problem, problem_responses
from federation.web.schemas import LoginRequest, Message, SessionOut, Strict, WhoAmI

__all__ = ["LoginRequest", "Message", "Problem", "SessionOut", "Strict", "WhoAmI"]  # the kit's, used by the routes

STUDY_ID_PATTERN = r"^0x[0-9a-fA-F]{64}$"


class Check(BaseModel):
    ok: bool
    detail: str


class ChainCheck(Check):
    rpc_url: str
    latest_block: int | None = None
    hospital_account: str | None = None


class SuperLinkCheck(Check):
    address: str


class LastRound(BaseModel):
    study_id: str
    round: int
    phase: str
    block: int
    patients_used: int
    recorded_at: datetime


class HealthOut(BaseModel):
    hospital: str
    ok: bool = Field(description="true when every check passed")
    chain: ChainCheck
    superlink: SuperLinkCheck
    database: Check
    keys: Check
    patients: int
    last_round: LastRound | None = Field(description="the newest entry of the node's usage log")


class PatientOutcomeOut(BaseModel):
    record_number: str
    outcome: str = Field(description="updated or rejected (imported and unchanged patients are only counted)")
    reasons: list[str]


class ImportOut(BaseModel):
    source: str
    format: Literal["csv", "fhir"]
    imported: int
    incomplete: int
    already_present: int = Field(description="present with the same values: nothing changed")
    updated: int = Field(0, description="present with new values: re-sealed, the changed fields in `patients`")
    rejected: int = Field(0, description="left out of an otherwise good file, each with its reason in `patients`")
    skipped: dict[str, int] = Field(default_factory=dict, description="resources or values not read, by kind")
    patients: list[PatientOutcomeOut] = Field(default_factory=list)
    cohorts: dict[str, int]


class PatientOut(BaseModel):
    record_number: str
    kind: str = Field(description="which tasks can read the record: heart-disease or diabetes")
    cohort: str = Field(description="train, test or incomplete")
    source: str
    imported_at: datetime
    enrolled: bool = Field(description="bound to a consent key on chain")
    portal_account: bool


class RecordOut(PatientOut):
    identifier_system: str | None = Field(description="the identifier system of the record number (null: imported "
                                                      "before systems were kept); numbers match across files only "
                                                      "under the same system")
    provenance: dict[str, dict] = Field(description="per stored field or series, where its value came from: FHIR "
                                                    "resource id, code system, code, time, measurements not used, "
                                                    "file (a CSV's: the line); no clinical values")


class PatientPage(BaseModel):
    total: int
    offset: int
    patients: list[PatientOut]


class EnrolmentCodeRequest(Strict):
    record_number: str = Field(min_length=1, max_length=64, description="the hospital's record number of the patient")


class EnrolmentCodeOut(BaseModel):
    code: str = Field(description="give this to the patient; it is shown only once")
    record_number: str
    expires_at: datetime


class OutstandingCode(BaseModel):
    record_number: str
    created_at: datetime
    expires_at: datetime


class PrivacyRelease(BaseModel):
    """One entry of a study's privacy account: what left the node in a round, and what it cost."""

    round: int
    release: str = Field(description='"train" (DP-SGD steps), "count" (the noisy training count) or "evaluate"')
    noise_multiplier: float
    epsilon_after: float = Field(description="the study's epsilon at this node after this release")
    cost: float = Field(description="epsilon_after minus the epsilon before this release")


class UnfinishedRead(BaseModel):
    round: int
    phase: str = Field(description="'train' or 'evaluate'")


class StudyBudget(BaseModel):
    study_id: str
    accepted: bool | None = Field(description="accepted by this hospital on chain (null: the chain did not answer)")
    live: bool | None = Field(description="study live for this hospital now (null: unknown)")
    purpose: str | None
    task_id: str | None
    epsilon_spent: float
    epsilon_budget: float | None
    delta: float | None
    rounds_allowed: int | None
    rounds_contributed: int = Field(description="rounds this node trained in (completed uses only)")
    rounds_evaluated: int = Field(description="rounds this node evaluated (completed uses only)")
    reads_not_completed: list[UnfinishedRead] = Field(
        default_factory=list, description="read, reply not sent: data read by a node that stopped before it completed "
                                          "the use (the audit lists and consent-checks these; voided reads are no use)")
    refusals: int = Field(description="round phases this node refused (it used no data in them)")
    ends_at: datetime | None
    suspended: bool | None
    evaluation_share: float | None = Field(default=None, description="the budget's share for evaluation (on chain)")
    releases: list[PrivacyRelease] = Field(default_factory=list, description="the study's privacy account")
    epsilon_on_chain: float | None = Field(default=None, description="the spending this hospital recorded on chain "
                                           "(null: unknown)")
    behind_chain: str | None = Field(default=None, description="why the node refuses to train this study: its "
                                     "account is below the chain's record (a database restored from an older backup)")


class StudiesOut(BaseModel):
    chain_ok: bool
    detail: str
    studies: list[StudyBudget]


class ActionOut(BaseModel):
    at: datetime
    actor: str
    role: str
    action: str
    target: str
    outcome: str
    detail: str


def errors(*statuses: int) -> dict:
    """The error answers a route documents (every error body is federation.web's Problem); any route may answer a
    malformed request with 400 or 422."""
    return problem_responses(*statuses, meaning=MEANING)


MEANING = {403: "wrong role or CSRF token", 409: "conflicts with the node's state", 429: "too many failed logins"}
