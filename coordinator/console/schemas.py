"""Request and response models of every console endpoint."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from coordinator.console.runs import NAME_PATTERN
from coordinator.console.settings import ROLES
from coordinator.console.studies import DATA_CATEGORIES, PURPOSES
from federation.web.errors import Problem, problem_responses
from federation.web import schemas as web
from federation.web.schemas import LoginRequest, Message, Strict

__all__ = ["LoginRequest", "Message", "Problem", "Strict"]  # the kit's, used by the routes

STUDY_ID_PATTERN = r"^0x[0-9a-fA-F]{64}$"
Purpose = Literal[tuple(PURPOSES)]  # type: ignore[valid-type]
Category = Literal[tuple(DATA_CATEGORIES)]  # type: ignore[valid-type]
Role = Literal[ROLES]  # type: ignore[valid-type]


def answers(*codes: int) -> dict:
    """The error answers a route documents (every error body is federation.web's Problem)."""
    return problem_responses(*codes)


COMMON = (400, 401, 403, 404, 409, 422, 503)


class SessionOut(web.SessionOut):
    role: Role


class MeOut(web.WhoAmI):
    role: Role
    can_operate: bool = Field(description="the role may create studies and launch or stop runs")


class StudyCreate(Strict):
    purpose: Purpose = Field(description="HL7 v3 PurposeOfUse code, e.g. HRESCH (health research)")
    task_id: str = Field(min_length=1, max_length=32, description="a federated task, e.g. heart-disease/v1")
    data_categories: list[Category] = Field(default_factory=list, max_length=len(DATA_CATEGORIES))
    epsilon_budget: float = Field(gt=0, le=1000, description="each hospital's privacy budget (epsilon) for the study")
    delta_exponent: int = Field(ge=1, le=30, description="delta of the (epsilon, delta) budget is 10^-delta_exponent")
    rounds: int = Field(ge=1, le=10000, description="training rounds the study allows")
    ends_on: date = Field(description="last day (UTC) on which hospitals may use data for the study")


class AcceptanceOut(BaseModel):
    account: str
    hospital: str | None = Field(description="the hospital's name, if a run has seen it (the chain has no names)")
    block: int


class StudyOut(BaseModel):
    study_id: str
    purpose: str
    purpose_text: str
    task_id: str
    data_categories: list[str]
    epsilon_budget: float
    delta: float
    rounds: int
    ends_at: datetime
    suspended: bool
    ended: bool
    proposed_block: int
    accepted_by: list[AcceptanceOut]


class StudyCreated(BaseModel):
    study_id: str
    detail: str


class RunCreate(Strict):
    study_id: str = Field(pattern=STUDY_ID_PATTERN, description="0x and 64 hex digits")
    name: str = Field(pattern=NAME_PATTERN, description="1 to 40 lower-case letters, digits or '-'; the report folder")
    rounds: int = Field(ge=1, le=1000, description="rounds to run, at most the study's")
    min_nodes: int = Field(default=1, ge=1, le=1000, description="SuperNodes the run waits for")
    local_epochs: int | None = Field(default=None, ge=1, le=100)
    learning_rate: float | None = Field(default=None, gt=0, le=100)
    batch_size: int | None = Field(default=None, ge=1, le=100000)
    max_grad_norm: float | None = Field(default=None, gt=0, le=1000)
    strategy: Literal["fedavg", "fedadam", "fedyogi"] | None = None


RunStatus = Literal["starting", "running", "finished", "failed", "stopped"]


class HospitalOut(BaseModel):
    name: str
    account: str | None
    patients: int | None
    consented: int | None
    epsilon_spent: float | None
    epsilon_budget: float | None


class RoundOut(BaseModel):
    round: int
    status: str | None
    block: int | None
    accuracy: float | None
    loss: float | None
    metrics: dict[str, float | None] = Field(description="every metric the round reported (accuracy, loss, ...)")
    used: dict[str, int] = Field(description="patients used for training, per hospital")
    test_used: dict[str, int]
    epsilon: dict[str, float | None] = Field(description="epsilon spent so far, per hospital")
    errors: dict[str, str]
    anchor_block: int | None
    seconds: float | None


class RunFiles(BaseModel):
    model: bool
    report_json: bool
    report_html: bool


class RunSummary(BaseModel):
    name: str
    study_id: str
    status: RunStatus
    rounds_planned: int
    rounds_done: int
    launched_by: str
    launched_at: datetime
    stopped_by: str | None


class RunOut(RunSummary):
    message: str
    flwr_run_id: str | None = Field(description="Flower's run id, in decimal (a 64-bit unsigned number)")
    hospitals: list[HospitalOut]
    rounds: list[RoundOut]
    files: RunFiles
    log_tail: str = Field(description="the end of the flwr run log, when the run failed")


class ActivityOut(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target: str
    outcome: str
    detail: str
