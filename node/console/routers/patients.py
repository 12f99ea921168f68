"""Patients: the list (no clinical data), one record's sources (identifier system, provenance), and imports of
CSV files or FHIR R4 Bundles."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from node.console import records
from federation.web.errors import WebError
from node.console.deps import CurrentStaff, Db, ItAdmin, State, record
from node.console.schemas import ImportOut, PatientPage, RecordOut, errors

router = APIRouter(prefix="/api", tags=["patients"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "the file itself: a heart-disease CSV (docs/node.md) or a FHIR R4 Bundle of Patient and "
                       "Observation resources",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/fhir+json": {"schema": {"type": "object"}},
        },
    }
}


@router.get("/patients", response_model=PatientPage, responses=errors(401, 422))
def patients(
    staff: CurrentStaff, db: Db,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cohort: Annotated[Literal["train", "test", "incomplete"] | None, Query()] = None,
) -> PatientPage:
    return records.patient_page(db, offset=offset, limit=limit, cohort=cohort)


@router.get("/patients/{record_number:path}", response_model=RecordOut, responses=errors(401, 403, 404, 409))
def patient_record(record_number: str, staff: ItAdmin, db: Db, state: State) -> RecordOut:
    """One record's identifier system and the provenance of each stored value (no clinical values). It-admin
    only, and logged: the provenance says which tests a patient had, and when."""
    found = records.record_view(state, db, record_number)
    record(db, staff, "records.view", target=record_number)
    return found


async def read_upload(request: Request, *, limit_bytes: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise WebError(f"the file is larger than {limit_bytes // (1024 * 1024)} MiB", status=413)
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > limit_bytes:
            raise WebError(f"the file is larger than {limit_bytes // (1024 * 1024)} MiB", status=413)
    return bytes(data)


@router.post("/imports", response_model=ImportOut, status_code=201, openapi_extra=UPLOAD_BODY,
             responses=errors(401, 403, 409, 413, 415, 422))
async def import_records(
    request: Request, staff: ItAdmin, db: Db, state: State,
    filename: Annotated[str | None, Query(max_length=200, description="the file's name, kept as the records' source")] = None,
    record_prefix: Annotated[str | None, Query(pattern=r"^[A-Z0-9]{1,10}$",
                                               description="for records without a record number")] = None,
) -> ImportOut:
    try:
        fmt = records.upload_format(request.headers.get("content-type", ""))
        data = await read_upload(request, limit_bytes=state.settings.max_upload_bytes)
        # The import itself is synchronous work (parsing, encryption, one transaction): off the event loop.
        from starlette.concurrency import run_in_threadpool

        report = await run_in_threadpool(records.import_upload, state, data, fmt=fmt, filename=filename,
                                         record_prefix=record_prefix)
    except WebError as exc:
        record(db, staff, "records.import", target=filename or "", outcome="refused", detail=str(exc))
        raise
    record(db, staff, "records.import", target=report.source,
           detail=f"{report.format}: {report.imported} imported ({report.incomplete} incomplete), "
                  f"{report.updated} updated, {report.already_present} unchanged, {report.rejected} rejected"
                  + "".join(f"; {p.record_number} {p.outcome}: {', '.join(p.reasons)}" for p in report.patients))
    return report
