"""The patients' twins in the console (`/api/twins/...`, node/twins/api.py): the node's encrypted store as
their data, the federated models this node kept (node/models_store.py) as their models.

Both roles may read twins; they are clinical data, so every request is written to the action log with who
made it, the patient and the outcome. Records are decrypted per request with the node's data key and are
never written anywhere else. This is the hospital's use of its own patients' records in their care: it reads
no other hospital's data and puts nothing on chain, so no study consent is asked for; a twin shows a
patient's own record, and the federated models were trained only on patients whose consent held.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from sqlmodel import select

from node.console.deps import ConsoleState, CurrentStaff, Db, record
from node.console.schemas import errors
from node.models_store import SavedModel, latest_model
from node.store import Patient
from node.twins.api import FederatedForecaster, TwinSources, twin_router
from node.twins.heart_risk import HeartRiskModel
from node.twins.records import KIND as DIABETES_KIND
from node.twins.records import DiabetesRecord
from node.vault import Vault, VaultError

log = logging.getLogger("twinledger.console")
HEART_KIND = "heart-disease"
HEART_TASK = "heart-disease/v1"
GLUCOSE_TASK = "glucose-forecast/v1"


def heart_model_from(saved: SavedModel) -> HeartRiskModel:
    """The risk model of a kept heart-disease/v1 model: its weights on the features standardised with the
    normaliser its round used (the consented training patients' mean and standard deviation)."""
    module = saved.module().model
    return HeartRiskModel(module.weight.detach().numpy().reshape(-1).astype(float), float(module.bias.detach().item()),
                          saved.shift.astype(float), saved.scale.astype(float))


class StoreSources:
    """TwinSources over the node's store: patients by kind, records decrypted on demand by record number."""

    def __init__(self, state: ConsoleState):
        self.state = state

    def _ids(self, kind: str) -> list[str]:
        with self.state.store.session() as db:
            return list(db.exec(select(Patient.record_number).where(Patient.kind == kind).order_by(Patient.id)))

    def _clinical(self, record_number: str, kind: str) -> dict | None:
        with self.state.store.session() as db:
            patient = db.exec(select(Patient).where(Patient.record_number == record_number,
                                                    Patient.kind == kind)).first()
        if patient is None:
            return None
        try:
            vault = Vault.open(self.state.settings.node.data_key_file)
            return vault.open_record(patient.clinical, associated=patient.pseudonym)
        except VaultError as exc:
            raise HTTPException(503, f"the node's data key cannot open this record: {exc}") from None

    def diabetes_record(self, record_number: str) -> DiabetesRecord | None:
        clinical = self._clinical(record_number, DIABETES_KIND)
        if clinical is None:
            return None
        try:
            return DiabetesRecord.from_clinical(record_number, clinical)
        except (KeyError, TypeError, ValueError) as exc:
            raise HTTPException(422, f"the stored record of {record_number!r} cannot be read as CGM data: {exc}") from None

    def heart_record(self, record_number: str) -> dict | None:
        return self._clinical(record_number, HEART_KIND)

    def heart_model(self) -> HeartRiskModel | None:
        saved = latest_model(self.state.settings.node.home, HEART_TASK)
        if saved is None:
            return None
        try:
            return heart_model_from(saved)
        except (RuntimeError, KeyError, AttributeError, ValueError) as exc:
            log.warning("the kept heart-disease model %s cannot be used: %s", saved.path, exc)
            return None

    def glucose_forecaster(self) -> FederatedForecaster | None:
        saved = latest_model(self.state.settings.node.home, GLUCOSE_TASK)
        if saved is None:
            return None
        try:
            model = saved.module()
        except (RuntimeError, KeyError, ValueError) as exc:
            log.warning("the kept glucose forecaster %s cannot be used: %s", saved.path, exc)
            return None
        return FederatedForecaster(model=model, task_id=saved.task_id, study_id=saved.study_id, round=saved.round,
                                   block=saved.block)

    def twin_sources(self) -> TwinSources:
        return TwinSources(
            diabetes_patients=lambda: self._ids(DIABETES_KIND), diabetes_record=self.diabetes_record,
            heart_patients=lambda: self._ids(HEART_KIND), heart_record=self.heart_record,
            heart_model=self.heart_model, glucose_forecaster=self.glucose_forecaster)


def logged_twin_access(request: Request, staff: CurrentStaff, db: Db) -> Iterator[None]:
    """Any logged-in staff member (it-admin or viewer); the access is logged with who, the patient and outcome."""
    route = request.scope.get("route")
    action = "twins." + (getattr(route, "name", "") or "read")
    target = str(request.path_params.get("patient_id", ""))
    try:
        yield
    except HTTPException as exc:
        record(db, staff, action, target=target, outcome="refused", detail=f"{exc.status_code}: {exc.detail}")
        raise
    except RequestValidationError as exc:
        record(db, staff, action, target=target, outcome="refused", detail=f"422: {len(exc.errors())} invalid field(s)")
        raise
    except Exception as exc:
        record(db, staff, action, target=target, outcome="failed", detail=type(exc).__name__)
        raise
    record(db, staff, action, target=target, detail=request.url.path)


def twins_api(state: ConsoleState) -> APIRouter:
    """The twins' router under /api, behind the console's authentication, with access logging."""
    twins = twin_router(StoreSources(state).twin_sources())
    state.twin_endpoints = {route.name: route.endpoint for route in twins.routes}  # for the pages below
    router = APIRouter(prefix="/api")
    router.include_router(twins, dependencies=[Depends(logged_twin_access)], responses=errors(401, 404, 503))
    return router



# ---------------------------------------------------------------------------------------------------------
# Pages for clinicians (server-rendered, over the same endpoints as the JSON API; each view is logged)

pages_router = APIRouter(include_in_schema=False)


def _endpoint(request: Request, name: str):
    return request.app.state.console.twin_endpoints[name]


def _page(request: Request, db, name: str, patient_id: str, template: str, title: str, call):
    from node.console.routers.pages import _staff, render

    staff = _staff(request, db, request.app.state.console)
    action = f"twins.page.{name}"
    try:
        answer = call()
    except HTTPException as exc:
        record(db, staff, action, target=patient_id, outcome="refused", detail=f"{exc.status_code}: {exc.detail}")
        return render(request, template, status=exc.status_code, staff=staff, title=title, error=str(exc.detail),
                      answer=None, patient_id=patient_id)
    record(db, staff, action, target=patient_id, detail=request.url.path)
    return render(request, template, staff=staff, title=title, answer=answer, patient_id=patient_id)


@pages_router.get("/twins")
def twins_page(request: Request, db: Db):
    return _page(request, db, "patients", "", "twins.html", "Patient twins",
                 lambda: _endpoint(request, "list_patients")())


@pages_router.get("/twins/diabetes/{patient_id}")
def diabetes_page(request: Request, db: Db, patient_id: str):
    def call():
        twin = _endpoint(request, "calibrated_twin")(patient_id)
        return {"twin": twin, "forecast": _endpoint(request, "glucose_forecast")(patient_id, 120)}

    return _page(request, db, "diabetes", patient_id, "twin_diabetes.html", f"Twin of {patient_id}", call)


@pages_router.get("/twins/heart/{patient_id}")
def heart_page(request: Request, db: Db, patient_id: str):
    return _page(request, db, "heart", patient_id, "twin_heart.html", f"Heart-disease risk of {patient_id}",
                 lambda: _endpoint(request, "heart_risk")(patient_id, 130.0, 200.0))


@pages_router.get("/twins/diabetes/{patient_id}/therapy")
def therapy_page(request: Request, db: Db, patient_id: str):
    """The therapy optimiser's current and proposed plans side by side (decision support; tens of seconds)."""
    return _page(request, db, "therapy", patient_id, "twin_therapy.html", f"Therapy suggestion for {patient_id}",
                 lambda: _endpoint(request, "therapy")(patient_id))
