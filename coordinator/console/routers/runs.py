"""Runs: launch (POST /api/runs), list, watch (GET /api/runs/{name}, polled by the live page), stop, files."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from coordinator.console import service
from coordinator.console.deps import ApiCaller, ApiOperator, Db, State
from coordinator.console.runs import NAME_PATTERN
from coordinator.console.schemas import COMMON, RunCreate, RunOut, RunSummary, answers
from federation.web.errors import WebError

router = APIRouter(prefix="/api/runs", tags=["runs"], responses=answers(*COMMON, 504))
RunName = Annotated[str, Path(pattern=NAME_PATTERN)]
# report.html is the coordinator's self-contained page: inline style, images from beside it, no scripts.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'"
PlotName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9-]{0,30}\.png$", description="e.g. accuracy.png, epsilon.png")]


@router.get("", response_model=list[RunSummary])
def list_runs(caller: ApiCaller, db: Db, state: State) -> list[RunSummary]:
    return service.list_runs(state, db)


@router.post("", response_model=RunOut, status_code=201)
def launch(body: RunCreate, caller: ApiOperator, db: Db, state: State) -> RunOut:
    return service.launch_run(state, db, caller, body, client=caller.client)


@router.get("/{name}", response_model=RunOut)
def watch(name: RunName, caller: ApiCaller, db: Db, state: State) -> RunOut:
    return service.run_out(state, db, service.require_run(db, name))


@router.post("/{name}/stop", response_model=RunOut)
def stop(name: RunName, caller: ApiOperator, db: Db, state: State) -> RunOut:
    service.stop_run(state, db, caller, name, client=caller.client)
    return service.run_out(state, db, service.require_run(db, name))


@router.get("/{name}/files/{file}", response_class=FileResponse, responses={200: {"content": {
    "application/octet-stream": {}, "application/json": {}, "text/html": {}}}})
def download(name: RunName, file: Literal["model.pt", "report.json", "report.html"],
             caller: ApiCaller, db: Db, state: State) -> FileResponse:
    path = service.run_file(state, db, caller, name, file, client=caller.client)
    if file == "report.html":
        return FileResponse(path, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP})
    return FileResponse(path, media_type=service.FILES[file], filename=f"{name}-{file}")


@router.get("/{name}/files/report-plots/{plot}", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}})
def plot(name: RunName, plot: PlotName, caller: ApiCaller, db: Db, state: State) -> FileResponse:
    path = state.runs.run_dir(service.require_run(db, name).name) / "report-plots" / plot
    if not path.exists():
        raise WebError(f"run {name!r} has no plot {plot} yet: open report.html first", status=404)
    return FileResponse(path, media_type="image/png")
