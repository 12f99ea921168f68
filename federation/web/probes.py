"""What every web app answers without a login, for probes and scrapes (added by federation.web.app):

    GET /healthz   200 {"status": "alive"}: the process serves requests (a liveness probe)
    GET /readyz    200 {"status": "ready", "checks": {...}}, or 503 {"status": "not ready", "failed": [names],
                   "checks": {name: {"ok": false, "detail": "..."}}}: the app's own checks (a readiness probe)
    GET /metrics   Prometheus' text format (federation/monitoring.py)

Each app passes its checks, by name (`chain`, `database`, `keys`, `superlink`); the checks here are the pieces
they are made of. Every check runs in parallel with the others and answers within `timeout_s`: one that raises
or takes longer is a failed check, never a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from federation import monitoring
from federation.health import probe_tcp


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


Checks = Mapping[str, Callable[[], Check]]
READINESS_TIMEOUT_S = 5.0


def add_probes(app: FastAPI, *, readiness: Callable[[], Checks] | None = None,
               before_scrape: Callable[[], None] | None = None, timeout_s: float = READINESS_TIMEOUT_S) -> None:
    """/healthz, /readyz (the checks `readiness()` names) and /metrics (after `before_scrape()`, which sets the
    gauges the app reads from its database) on `app`; none in the OpenAPI document."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        results = await run_in_threadpool(run_checks, readiness, timeout_s=timeout_s)
        failed = [name for name, check in results.items() if not check.ok]
        body = {"status": "not ready" if failed else "ready", "failed": failed,
                "checks": {name: {"ok": check.ok, "detail": check.detail} for name, check in results.items()}}
        return JSONResponse(body, status_code=503 if failed else 200)

    @app.get("/metrics", include_in_schema=False)
    async def scrape() -> Response:
        if before_scrape is not None:
            try:
                await run_in_threadpool(before_scrape)
            except Exception:  # noqa: BLE001 - a gauge that could not be refreshed keeps its last value
                pass
        body, content_type = monitoring.exposition()
        return Response(body, media_type=content_type)


def run_checks(readiness: Callable[[], Checks] | None, *, timeout_s: float) -> dict[str, Check]:
    """Every check's result, in parallel, each within `timeout_s`."""
    try:
        checks = dict(readiness()) if readiness is not None else {}
    except Exception as exc:  # noqa: BLE001 - the app could not even say what to check
        return {"app": Check(False, f"the checks could not be prepared ({type(exc).__name__})")}
    if not checks:
        return {}
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="readyz")
    futures = {name: pool.submit(check) for name, check in checks.items()}
    results = {}
    for name, future in futures.items():
        try:
            results[name] = future.result(timeout=timeout_s)
        except FutureTimeout:
            results[name] = Check(False, f"no answer within {timeout_s:g} s")
        except Exception as exc:  # noqa: BLE001 - a check that raises has failed
            results[name] = Check(False, _reason(exc))
    pool.shutdown(wait=False, cancel_futures=True)  # a hung check finishes on its own; the answer does not wait
    return results


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# ---- the pieces of the apps' checks ----

def chain_ready(open_ledger: Callable[[], object]) -> Check:
    """The chain answers and still holds the contracts of the deployment file (`Ledger.verify_chain`)."""
    ledger = open_ledger()
    ledger.verify_chain()
    return Check(True, f"the chain answers at block {ledger.block_number()} and holds the contracts")


def database_writable(engine, *, wait_s: float = 2.0) -> Check:
    """A write the database must accept, rolled back: SQLite's header (user_version, rewritten with its own value)
    in a transaction. A database another writer holds past `wait_s` counts as writable (busy, not broken)."""
    import sqlite3

    if engine.dialect.name != "sqlite":
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        return Check(True, "the database answers")
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        version = int(cursor.execute("PRAGMA user_version").fetchone()[0])
        waits_ms = int(cursor.execute("PRAGMA busy_timeout").fetchone()[0])
        cursor.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
        try:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                cursor.execute(f"PRAGMA user_version = {version}")
            finally:
                cursor.execute("ROLLBACK")
        finally:
            cursor.execute(f"PRAGMA busy_timeout = {waits_ms}")  # the pooled connection waits as before
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            return Check(True, "the database is busy with another writer")
        return Check(False, f"the database does not accept writes: {exc}")
    finally:
        raw.close()
    return Check(True, "the database accepts writes")


def key_files(files: Mapping[str, Path], *, optional: frozenset[str] = frozenset()) -> Check:
    """Each key file exists (unless its label is `optional`), is readable by this process and by no one else."""
    problems, present = [], []
    for label, path in files.items():
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            if label not in optional:
                problems.append(f"{label} {path} is missing")
            continue
        if mode & 0o077:
            problems.append(f"{label} {path} is readable by others (mode {mode:o}): chmod 600 it")
            continue
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            problems.append(f"{label} {path} cannot be read by this process ({exc.strerror or type(exc).__name__})")
            continue
        present.append(label)
    if problems:
        return Check(False, "; ".join(problems))
    return Check(True, f"{', '.join(present) or 'no key'} present, owner-only")


def reachable(address: str, *, timeout_s: float, what: str = "") -> Check:
    """`address` (host:port) accepts TCP connections (federation.health's probe)."""
    name = f"{what} {address}".strip()
    if not address:
        return Check(False, f"no {what or 'address'} configured")
    try:
        probe_tcp(address, timeout_s=timeout_s)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        return Check(False, f"no TCP connection to {name}: {reason}")
    return Check(True, f"{name} accepts TCP connections")
