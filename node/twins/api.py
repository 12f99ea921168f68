"""The twins' HTTP API: a FastAPI router a node's web app mounts.

    router = twin_router(TwinSources(diabetes_patients=..., diabetes_record=..., heart_patients=...,
                                     heart_record=..., heart_model=...))
    app.include_router(router, prefix="/api")

Data arrive by injection: callables that return a patient's DiabetesRecord (or heart-disease record dict)
by id, list the patients, and give the current federated heart model, so the node wires its encrypted
store and this module never reads storage itself. A callable returning None or raising KeyError means
"unknown patient" (404). Calibrations cost seconds: they are cached per patient and record content.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Literal, Optional

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field

from node.twins.api_therapy import add_therapy_route
from node.twins.calibration import DAY_MIN, CalibratedTwin, CalibrationError, calibrate
from node.twins.forecast import Backtest, backtest_30min, choose_point_30min, forecast, latest_federated_30min
from node.twins.glycemia import ALL_METRIC_NAMES
from node.twins.heart_risk import HeartRecordError, HeartRiskModel, heart_whatif
from node.twins.records import DiabetesRecord
from node.twins.whatif import TreatmentPlan, run_whatif

CALIBRATION_DAYS = 3  # the most recent days of a record a twin is calibrated on


@dataclass(frozen=True)
class FederatedForecaster:
    """A federated glucose forecaster (federation/tasks/glucose_forecast.py) and where it came from."""

    model: object  # torch module on the task's raw features (node/models_store.py SavedModel.module())
    task_id: str
    study_id: str
    round: int
    block: int


@dataclass
class TwinSources:
    diabetes_patients: Callable[[], list[str]]
    diabetes_record: Callable[[str], Optional[DiabetesRecord]]
    heart_patients: Callable[[], list[str]] = lambda: []
    heart_record: Callable[[str], Optional[dict]] = lambda patient_id: None
    heart_model: Callable[[], Optional[HeartRiskModel]] = lambda: None
    # The node's latest federated glucose forecaster, if any: forecasts use it where it beats the twin.
    glucose_forecaster: Callable[[], Optional[FederatedForecaster]] = lambda: None


# ---------------------------------------------------------------------------------------------------------
# Request and response models


class PatientList(BaseModel):
    diabetes: list[str]
    heart: list[str]


class FittedParameter(BaseModel):
    symbol: str
    unit: str
    map: float = Field(description="maximum a posteriori estimate")
    low_95: float
    high_95: float
    prior_median: float


class TherapyModel(BaseModel):
    basal_u_per_h: float
    carb_ratio_g_per_u: float
    correction_factor_mgdl_per_u: float
    body_weight_kg: float


class TwinResponse(BaseModel):
    patient_id: str
    calibrated_at: datetime
    calibration_minutes: int
    parameters: list[FittedParameter]
    therapy: TherapyModel
    residual_sd_mgdl: float
    iterations: int
    converged: bool
    method: str = "MAP with population log-normal priors (30 UVA/Padova virtual patients), Laplace posterior"


class PointForecastModel(BaseModel):
    method: Literal["twin", "federated"] = Field(
        description="which forecaster gave this point: the one with the lower backtest RMSE on the patient's last day")
    made_at: datetime = Field(description="the twin's origin, or the federated forecaster's last CGM reading")
    at: datetime = Field(description="made_at + 30 minutes")
    glucose_mgdl: float
    twin_glucose_mgdl: float = Field(description="the twin's MAP member, 30 minutes after the twin's origin")
    federated_glucose_mgdl: Optional[float] = None
    reason: str


class BacktestModel(BaseModel):
    origins: int = Field(description="forecast origins scored, every 5 minutes of the day before the origin")
    first_origin: datetime
    last_origin: datetime
    twin_rmse_30min_mgdl: float
    federated_rmse_30min_mgdl: float


class FederatedModelInfo(BaseModel):
    task_id: str
    study_id: str
    round: int
    block: int = Field(description="the round's pinned block")


class ForecastResponse(BaseModel):
    patient_id: str
    origin: datetime
    method: str = Field(description="the forecaster of the curve and its bands (always the calibrated twin)")
    point_30min: PointForecastModel
    backtest: Optional[BacktestModel] = Field(None, description="both forecasters scored on the patient's last day; "
                                                                "null without a federated glucose forecaster")
    federated_model: Optional[FederatedModelInfo] = None
    time_min: list[float]
    median_mgdl: list[float]
    low_mgdl: list[float] = Field(description="5th percentile over the calibration ensemble")
    high_mgdl: list[float] = Field(description="95th percentile over the calibration ensemble")


class Meal(BaseModel):
    time_min: int = Field(ge=0, le=3 * DAY_MIN, description="minutes from now")
    carbs_g: float = Field(ge=0, le=300)


class Bolus(BaseModel):
    time_min: int = Field(ge=0, le=3 * DAY_MIN)
    units_u: float = Field(ge=0, le=30)


class PlanModel(BaseModel):
    name: str = Field(min_length=1, max_length=60)
    basal_u_per_h: Optional[float] = Field(None, ge=0, le=10, description="None: the patient's current basal")
    carb_ratio_g_per_u: Optional[float] = Field(None, gt=0, le=100)
    correction_factor_mgdl_per_u: Optional[float] = Field(None, gt=0, le=500)
    target_glucose_mgdl: float = Field(120, ge=70, le=250)
    correct_at_meals: bool = True
    extra_boluses: list[Bolus] = Field(default_factory=list, max_length=20)
    extra_meals: list[Meal] = Field(default_factory=list, max_length=20)

    def plan(self) -> TreatmentPlan:
        return TreatmentPlan(
            name=self.name, basal_u_per_h=self.basal_u_per_h, carb_ratio_g_per_u=self.carb_ratio_g_per_u,
            correction_factor_mgdl_per_u=self.correction_factor_mgdl_per_u,
            target_glucose_mgdl=self.target_glucose_mgdl, correct_at_meals=self.correct_at_meals,
            extra_boluses=tuple((b.time_min, b.units_u) for b in self.extra_boluses),
            extra_meals=tuple((m.time_min, m.carbs_g) for m in self.extra_meals))


class WhatIfRequest(BaseModel):
    plans: list[PlanModel] = Field(min_length=1, max_length=8)
    meals: Optional[list[Meal]] = Field(None, max_length=20, description="None: the meals of the record's last day")
    horizon_min: int = Field(DAY_MIN, ge=60, le=3 * DAY_MIN)
    members: int = Field(16, ge=1, le=64, description="calibration ensemble size")


class Metrics(BaseModel):
    time_in_range_70_180: float
    time_below_70: float
    time_below_54: float
    time_above_180: float
    lbgi: float
    hbgi: float
    mean_glucose_mgdl: float
    cv_glucose: float
    time_above_250: float = Field(description="share of time above 250 mg/dL (2019 consensus)")
    gmi_percent: float = Field(description="glucose management indicator, % (3.31 + 0.02392 x mean mg/dL)")


class PlanResult(BaseModel):
    name: str
    median: Metrics
    low: Metrics = Field(description="5th percentile over the calibration ensemble")
    high: Metrics = Field(description="95th percentile")
    total_bolus_u: float = Field(description="median over the ensemble")


class WhatIfResponse(BaseModel):
    patient_id: str
    horizon_min: int
    members: int
    meals: list[Meal]
    plans: list[PlanResult]


class RiskScenarioModel(BaseModel):
    name: str
    changes: dict[str, list[float]] = Field(description="field -> [from, to]")
    risk: float
    change_in_risk: float


class HeartRiskResponse(BaseModel):
    patient_id: str
    risk: float = Field(description="predicted probability of coronary artery disease under the federated model")
    scenarios: list[RiskScenarioModel]
    contributions: dict[str, float]
    associational_not_causal: bool = True
    note: str


# ---------------------------------------------------------------------------------------------------------


class CalibrationCache:
    """Calibrated twins by patient and record content (a new reading means a new calibration), LRU."""

    def __init__(self, size: int = 32):
        self.size = size
        self._twins: OrderedDict[tuple[str, str], CalibratedTwin] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def fingerprint(record: DiabetesRecord) -> str:
        digest = hashlib.sha256()
        for array in (record.cgm_mgdl, record.carbs_g, record.bolus_u, record.basal_u_per_h):
            digest.update(np.ascontiguousarray(array, dtype=float).tobytes())
        digest.update(repr((record.start, record.body_weight_kg)).encode())
        return digest.hexdigest()

    def twin(self, record: DiabetesRecord) -> CalibratedTwin:
        key = (record.patient_id, self.fingerprint(record))
        with self._lock:
            if key in self._twins:
                self._twins.move_to_end(key)
                return self._twins[key]
        first = max(0, record.minutes - CALIBRATION_DAYS * DAY_MIN)
        twin = calibrate(record.window(first, record.minutes))
        with self._lock:
            self._twins[key] = twin
            while len(self._twins) > self.size:
                self._twins.popitem(last=False)
        return twin


def twin_router(sources: TwinSources, *, cache: CalibrationCache | None = None) -> APIRouter:
    router = APIRouter(prefix="/twins", tags=["twins"])
    cache = cache or CalibrationCache()

    def record_of(patient_id: str) -> DiabetesRecord:
        try:
            record = sources.diabetes_record(patient_id)
        except KeyError:
            record = None
        if record is None:
            raise HTTPException(404, f"no diabetes twin for patient {patient_id!r}")
        return record

    def twin_of(record: DiabetesRecord) -> CalibratedTwin:
        try:
            return cache.twin(record)
        except CalibrationError as exc:
            raise HTTPException(422, f"this patient's record cannot calibrate a twin: {exc}") from None

    @router.get("/patients", response_model=PatientList)
    def list_patients() -> PatientList:
        return PatientList(diabetes=list(sources.diabetes_patients()), heart=list(sources.heart_patients()))

    @router.get("/diabetes/{patient_id}", response_model=TwinResponse)
    def calibrated_twin(patient_id: str) -> TwinResponse:
        twin = twin_of(record_of(patient_id))
        return TwinResponse(
            patient_id=patient_id, calibrated_at=twin.calibrated_at, calibration_minutes=twin.calibration_minutes,
            parameters=[FittedParameter(**{k: row[k] for k in FittedParameter.model_fields}) for row in twin.parameter_table()],
            therapy=TherapyModel(**vars(twin.therapy)), residual_sd_mgdl=twin.residual_sd_mgdl,
            iterations=twin.iterations, converged=twin.converged)

    def make_forecast(patient_id: str, horizon_min: int):
        record = record_of(patient_id)
        twin = twin_of(record)
        try:
            return record, twin, forecast(twin, record, horizon_min=horizon_min)
        except ValueError as exc:  # e.g. no CGM reading in the last 24 h
            raise HTTPException(422, f"cannot forecast for this patient: {exc}") from None

    backtests: OrderedDict[tuple, Optional[Backtest]] = OrderedDict()
    backtests_lock = threading.Lock()

    def backtest_of(twin: CalibratedTwin, record: DiabetesRecord, forecaster: FederatedForecaster):
        key = (record.patient_id, cache.fingerprint(record), forecaster.study_id, forecaster.round, forecaster.block)
        with backtests_lock:
            if key in backtests:
                backtests.move_to_end(key)
                return backtests[key]
        try:
            result = backtest_30min(twin, record, forecaster.model)
        except ValueError:  # e.g. no CGM in the history: the twin alone
            result = None
        with backtests_lock:
            backtests[key] = result
            while len(backtests) > cache.size:
                backtests.popitem(last=False)
        return result

    @router.get("/diabetes/{patient_id}/forecast", response_model=ForecastResponse)
    def glucose_forecast(patient_id: str, horizon_min: int = Query(120, ge=5, le=720)) -> ForecastResponse:
        record, twin, result = make_forecast(patient_id, max(horizon_min, 30))  # the point forecast is at 30 min
        forecaster = sources.glucose_forecaster()
        backtest = latest = None
        if forecaster is not None:
            backtest = backtest_of(twin, record, forecaster)
            latest = latest_federated_30min(record, forecaster.model)
        point = choose_point_30min(result, record, backtest, latest)
        shown = slice(0, horizon_min + 1)
        return ForecastResponse(
            patient_id=patient_id, origin=result.origin, method=result.method,
            point_30min=PointForecastModel(**{k: getattr(point, k) for k in PointForecastModel.model_fields}),
            backtest=None if backtest is None else BacktestModel(**vars(backtest)),
            federated_model=None if forecaster is None else FederatedModelInfo(
                task_id=forecaster.task_id, study_id=forecaster.study_id, round=forecaster.round,
                block=forecaster.block),
            time_min=result.time_min[shown].tolist(), median_mgdl=_rounded(result.median_mgdl[shown]),
            low_mgdl=_rounded(result.low_mgdl[shown]), high_mgdl=_rounded(result.high_mgdl[shown]))

    @router.get("/diabetes/{patient_id}/forecast.png", response_class=Response,
                responses={200: {"content": {"image/png": {}}}})
    def forecast_plot(patient_id: str, horizon_min: int = Query(120, ge=5, le=720)) -> Response:
        from node.twins.plots import forecast_png

        record, _, result = make_forecast(patient_id, horizon_min)
        return Response(forecast_png(result, history_mgdl=record.cgm_mgdl), media_type="image/png")

    def make_whatif(patient_id: str, request: WhatIfRequest):
        record = record_of(patient_id)
        twin = twin_of(record)
        meals = None if request.meals is None else [(m.time_min, m.carbs_g) for m in request.meals]
        try:
            return run_whatif(twin, record, [p.plan() for p in request.plans], meals=meals,
                              horizon_min=request.horizon_min, members=request.members)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @router.post("/diabetes/{patient_id}/whatif", response_model=WhatIfResponse)
    def whatif(patient_id: str, request: WhatIfRequest) -> WhatIfResponse:
        result = make_whatif(patient_id, request)
        plans = [PlanResult(name=o.plan.name, median=Metrics(**o.median), low=Metrics(**o.low), high=Metrics(**o.high),
                            total_bolus_u=float(np.median(o.bolus_u.sum(axis=1)))) for o in result.outcomes]
        return WhatIfResponse(patient_id=patient_id, horizon_min=request.horizon_min, members=result.members,
                              meals=[Meal(time_min=t, carbs_g=g) for t, g in result.meals], plans=plans)

    @router.post("/diabetes/{patient_id}/whatif.png", response_class=Response,
                 responses={200: {"content": {"image/png": {}}}})
    def whatif_plot(patient_id: str, request: WhatIfRequest) -> Response:
        from node.twins.plots import whatif_png

        return Response(whatif_png(make_whatif(patient_id, request)), media_type="image/png")

    add_therapy_route(router, record_of=record_of, twin_of=twin_of, fingerprint=cache.fingerprint)

    @router.get("/heart/{patient_id}/risk", response_model=HeartRiskResponse)
    def heart_risk(patient_id: str,
                   trestbps_target_mmhg: float = Query(130.0, gt=60, le=200),
                   chol_target_mgdl: float = Query(200.0, gt=50, le=400)) -> HeartRiskResponse:
        try:
            record = sources.heart_record(patient_id)
        except KeyError:
            record = None
        if record is None:
            raise HTTPException(404, f"no heart-disease record for patient {patient_id!r}")
        model = sources.heart_model()
        if model is None:
            raise HTTPException(503, "this node has no federated heart-disease model yet: it keeps one when it has "
                                     "evaluated a round of a heart-disease/v1 study with consented patients")
        try:
            result = heart_whatif(model, record, patient_id=patient_id,
                                  targets={"trestbps": trestbps_target_mmhg, "chol": chol_target_mgdl})
        except HeartRecordError as exc:
            raise HTTPException(422, str(exc)) from None
        return HeartRiskResponse(
            patient_id=patient_id, risk=result.risk, contributions=result.contributions, note=result.note,
            scenarios=[RiskScenarioModel(name=s.name, changes={k: list(v) for k, v in s.changes.items()}, risk=s.risk,
                                         change_in_risk=s.change_in_risk) for s in result.scenarios])

    return router


def _rounded(values) -> list[float]:
    return [round(float(v), 2) for v in values]


assert set(Metrics.model_fields) == set(ALL_METRIC_NAMES)
