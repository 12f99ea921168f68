"""The therapy optimiser's route on the twins' router (node/twins/api.py mounts it):

    GET /twins/diabetes/{patient_id}/therapy

the current and proposed basal rate, carb ratio and correction factor side by side, each with the median
and 5-95 % band over the calibration ensemble of its glycaemic metrics, labelled as decision support for a
clinician (node/twins/optimiser.py). A search costs tens of seconds: answers are cached per patient and
record content.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from node.twins.optimiser import TBR54_LIMIT, TBR70_LIMIT, ROBUST_PERCENTILE, TherapyOptimisation, optimise_therapy

RANGE_METRICS = ("time_in_range_70_180", "time_below_70", "time_below_54", "time_above_180", "time_above_250",
                 "mean_glucose_mgdl", "gmi_percent")


class Band(BaseModel):
    median: float
    low: float = Field(description="5th percentile over the calibration ensemble")
    high: float = Field(description="95th percentile over the calibration ensemble")


class TherapyPlanModel(BaseModel):
    name: str
    basal_u_per_h: float
    carb_ratio_g_per_u: float
    correction_factor_mgdl_per_u: float
    meets_limits: bool = Field(description="time below 70 and below 54 under their limits at the ensemble's "
                                           "95th percentile")
    metrics: dict[str, Band]


class TherapyResponse(BaseModel):
    patient_id: str
    decision_support: str = Field(description="how to read this: a suggestion for a clinician to review")
    current: TherapyPlanModel
    proposed: TherapyPlanModel
    limits: dict[str, float]
    objective: str = "largest mean time in range 70-180 mg/dL over the calibration ensemble"
    members: int
    days: int = Field(description="days of the patient's own meals each plan was simulated over")
    plans_evaluated: int
    recommendation: str = Field(description='"change: ..." or "no change recommended: ..." (the proposed plan is '
                                            'then the current one), with the reason')
    changed: bool = Field(description="the proposed plan differs from the current one")
    fixes_hypoglycaemia: bool = Field(description="the current plan breaks the hypoglycaemia limits on the twin "
                                                  "and the proposed one meets them, possibly at a cost in time in range")
    change_bands: dict[str, Band] = Field(description="proposed minus current per calibrated twin (paired): "
                                                      "time in range and time below 70, median and 5-95 % band")


def therapy_response(result: TherapyOptimisation) -> TherapyResponse:
    def plan(summary) -> TherapyPlanModel:
        return TherapyPlanModel(
            name=summary.name, meets_limits=summary.meets_limits, **vars(summary.settings),
            metrics={m: Band(median=summary.median[m], low=summary.low[m], high=summary.high[m]) for m in RANGE_METRICS})

    return TherapyResponse(
        patient_id=result.patient_id, decision_support=result.note, current=plan(result.current),
        proposed=plan(result.proposed), members=result.members, days=result.days,
        plans_evaluated=result.plans_evaluated, recommendation=result.recommendation, changed=result.changed,
        fixes_hypoglycaemia=result.fixes_hypoglycaemia,
        change_bands={k: Band(**v) for k, v in result.paired_change.items()},
        limits={"time_below_70": TBR70_LIMIT, "time_below_54": TBR54_LIMIT, "ensemble_percentile": ROBUST_PERCENTILE})


def add_therapy_route(router: APIRouter, *, record_of: Callable, twin_of: Callable, fingerprint: Callable,
                      size: int = 16) -> None:
    answers: OrderedDict[tuple, TherapyResponse] = OrderedDict()
    lock = threading.Lock()

    @router.get("/diabetes/{patient_id}/therapy", response_model=TherapyResponse)
    def therapy(patient_id: str) -> TherapyResponse:
        record = record_of(patient_id)
        key = (patient_id, fingerprint(record))
        with lock:
            if key in answers:
                answers.move_to_end(key)
                return answers[key]
        twin = twin_of(record)
        try:
            answer = therapy_response(optimise_therapy(twin, record))
        except ValueError as exc:
            raise HTTPException(422, f"cannot optimise this patient's therapy: {exc}") from None
        with lock:
            answers[key] = answer
            while len(answers) > size:
                answers.popitem(last=False)
        return answer
