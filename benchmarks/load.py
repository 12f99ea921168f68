"""Load benchmark: many patients changing consent at once through the real portal (its own process, on anvil),
and (benchmarks/consent_read.py) the consent of up to 1,000,000 pseudonyms read at one pinned block as the node
reads it.

    twinledger bench load --json

The portal part builds a hospital node home on a fresh anvil, opens `patients` portal accounts with portal-held
keys (enrolled in batches), grants half of them consent, starts `twinledger portal serve` as a process, logs every
patient in, then sends every patient's change at once (grant without consent, withdraw with). It counts HTTP 5xx,
changes lost (neither on chain nor reported as failed), the time to "sent" (durably queued) and to the recording
block, and changes per transaction, beside the portal's CPU per change and how busy the machine's cores were
(the portal is one process: its request threads share one GIL). The fault suite
(tests/node/portal/test_portal_load.py) runs the same site.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path

import aiohttp
import httpx
from eth_account import Account
from sqlmodel import select

from contracts import ledger as lg
from deploy import processes
from deploy.consortium import Consortium, chain_now, chain_url
from federation.ids import Pseudonym
from node import admin
from node.portal import security
from node.portal.models import ConsentRelay, PortalAccount
from node.store import Store

from .consent_read import consent_read

DATA = Path(__file__).resolve().parent.parent / "deploy" / "data" / "heart-disease" / "processed.cleveland.data"
PASSWORD = "a long enough password"
DAY_S = 86400


@dataclass
class Patient:
    username: str
    record_number: str
    pseudonym: str
    key: str  # the consent key the portal sealed; kept here only to sign the set-up grants
    granted_before: bool = False


@dataclass
class Site:
    """A hospital node home on a chain, with its patients' portal accounts: what the portal process serves."""

    home: Path
    consortium: Consortium
    hospital: lg.Ledger
    study: str
    patients: list[Patient]
    store: Store
    setup_s: float = 0.0
    service: processes.Service | None = None
    url: str = ""

    def start_portal(self, *, relay_wait_s: float | None = None, log_path: Path | None = None) -> None:
        """`twinledger portal serve` on a free port, plain HTTP (loopback), as its own process (portal.toml's
        defaults, or `relay_wait_s`)."""
        port = processes.free_port()
        env = {**os.environ, "PYTHONPATH": str(processes.PROJECT_ROOT), "TWINLEDGER_PORTAL_COOKIE_SECURE": "false"}
        if relay_wait_s is not None:
            env["TWINLEDGER_PORTAL_RELAY_WAIT_S"] = str(relay_wait_s)
        command = [sys.executable, "-m", "deploy.cli", "portal", "serve", "--home", str(self.home), "--port", str(port),
                   "--insecure-http"]
        self.service = processes.start("portal", command, log_path=log_path or self.home / "portal.log", env=env,
                                       cwd=processes.PROJECT_ROOT)
        self.url = f"http://127.0.0.1:{port}"
        processes.wait_until(self.service, lambda: httpx.get(self.url + "/login", timeout=2).status_code == 200,
                             timeout_s=60, what="the portal's login page")

    def kill_portal(self) -> None:
        """SIGKILL: the portal gets no chance to finish anything."""
        os.killpg(self.service.process.pid, signal.SIGKILL)
        self.service.process.wait(timeout=10)

    def stop_portal(self) -> None:
        if self.service is not None:
            self.service.stop()

    def holds_consent(self, patient: Patient) -> bool:
        return self.hospital.has_consent(Pseudonym.parse(patient.pseudonym), Pseudonym.parse(self.study))

    def changes(self) -> list[ConsentRelay]:
        with self.store.session() as session:
            return list(session.exec(select(ConsentRelay)))


def build_site(work: Path, *, rpc_url: str, patients: int, artifacts: dict | None = None) -> Site:
    """A node home with `patients` portal accounts (portal-held keys), enrolled on chain; half hold consent."""
    started = time.perf_counter()
    consortium = Consortium.deploy(lg.connect(rpc_url), rpc_url=rpc_url, deployment_file=work / "deployment.json",
                                   artifacts=artifacts, ether=100)
    rows = DATA.read_text().splitlines()
    records = work / "records.csv"
    records.write_text("\n".join(rows[i % len(rows)] for i in range(patients)) + "\n")
    node = consortium.add_node("Cleveland Clinic", work / "cleveland", records=[records])
    study = consortium.propose_study(epsilon_budget=3.0, delta_exponent=5, rounds=5,
                                     ends_at=int(time.time()) + 180 * DAY_S)
    node.accept(study)
    store = Store(node.settings.resolved_database_url)
    people = [Patient(f"patient{i:04d}", number, node.patients.pseudonyms[number], "0x" + os.urandom(32).hex())
              for i, number in enumerate(sorted(node.patients.pseudonyms))]

    def account(patient: Patient) -> PortalAccount:  # what redeeming an enrolment code stores
        salt, hashed = security.hash_password(PASSWORD)
        key_salt, sealed = security.seal_key(bytes.fromhex(patient.key[2:]), PASSWORD, associated=patient.pseudonym)
        return PortalAccount(username=patient.username, record_number=patient.record_number,
                             pseudonym=patient.pseudonym, consent_address=Account.from_key(patient.key).address,
                             password_salt=salt, password_hash=hashed, key_salt=key_salt, sealed_key=sealed)

    with ThreadPoolExecutor(max_workers=2) as pool:  # scrypt releases the GIL
        opened = list(pool.map(account, people))
    with store.session() as session:
        session.add_all(opened)
        session.commit()
    admin.enrol_patients(node.settings, node.ledger,
                         {p.record_number: Account.from_key(p.key).address for p in people})
    now = chain_now(node.ledger)
    far = now + 90 * DAY_S
    grants = []
    for patient in people[::2]:
        patient.granted_before = True
        grants.append(lg.sign_grant(patient.key, consortium.deployment, pseudonym=Pseudonym.parse(patient.pseudonym),
                                    study_id=study, valid_from=0, valid_until=far, nonce=0,
                                    deadline=now + 3600))
    node.ledger.relay_grants(grants)
    return Site(node.settings.home, consortium, node.ledger, str(study), people, store,
                setup_s=time.perf_counter() - started)


@dataclass
class Outcome:
    patient: Patient
    action: str
    status: int = 0
    accept_s: float = 0.0
    started_at: float = 0.0  # wall clock
    change_id: int | None = None
    detail: str = ""
    final: dict = field(default_factory=dict)


def patient_client(site: Site, *, timeout_s: float = 120.0) -> aiohttp.ClientSession:
    """One patient's browser: its own cookies (IP-addressed: the jar must be told to keep them) and connections.
    aiohttp rather than httpx: the load's 500 clients share one event loop, and aiohttp's request costs that loop
    about half of httpx's CPU, so that the loop answers late less often than the portal does."""
    return aiohttp.ClientSession(base_url=site.url, cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 timeout=aiohttp.ClientTimeout(total=timeout_s))


async def log_in(client: aiohttp.ClientSession, patient: Patient, gate: asyncio.Semaphore) -> dict:
    async with gate:
        # Connection: close: the change is sent later on a fresh connection, not on one the server may have
        # closed for idling meanwhile (uvicorn's keep-alive is 5 s; the client would see a read error).
        async with client.post("/api/session", json={"username": patient.username, "password": PASSWORD},
                               headers={"Connection": "close"}) as answer:
            answer.raise_for_status()
            return {"X-CSRF-Token": (await answer.json())["csrf_token"]}


async def _change(client: aiohttp.ClientSession, csrf: dict, outcome: Outcome, study: str, start: asyncio.Event
                  ) -> None:
    await start.wait()
    outcome.started_at = time.time()
    began = time.perf_counter()
    try:
        async with client.post(f"/api/studies/{study}/{outcome.action}", json={"password": PASSWORD},
                               headers=csrf) as answer:
            outcome.status = answer.status
            body = await answer.json() if answer.content_type == "application/json" else {}
    except (aiohttp.ClientError, TimeoutError) as exc:
        outcome.status, outcome.detail = 599, f"{type(exc).__name__}: {exc}"
        outcome.accept_s = time.perf_counter() - began
        return
    outcome.accept_s = time.perf_counter() - began
    outcome.change_id = body.get("change_id")
    outcome.detail = body.get("detail", "") if outcome.status >= 400 else body.get("status", "")


async def _burst(site: Site, *, timeout_s: float, meter: "CpuMeter | None" = None) -> list[Outcome]:
    clients = [patient_client(site, timeout_s=timeout_s) for _ in site.patients]
    try:
        gate = asyncio.Semaphore(8)  # logging in is set-up, not the load under test
        csrfs = await asyncio.gather(*(log_in(c, p, gate) for c, p in zip(clients, site.patients)))
        outcomes = [Outcome(p, "revoke" if p.granted_before else "grant") for p in site.patients]
        start = asyncio.Event()
        tasks = [asyncio.create_task(_change(c, csrf, o, site.study, start))
                 for c, csrf, o in zip(clients, csrfs, outcomes)]
        await asyncio.sleep(0.2)
        if meter is not None:
            meter.begin()
        start.set()
        await asyncio.gather(*tasks)
        if meter is not None:
            meter.end()
        return outcomes
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def change_all_at_once(site: Site, *, timeout_s: float = 120.0, meter: "CpuMeter | None" = None) -> list[Outcome]:
    """Every patient logs in, then all send their change at the same moment (grant if without consent,
    withdraw if with); returns each answer. `meter` is started and stopped around the changes only."""
    return run_in_own_loop(_burst(site, timeout_s=timeout_s, meter=meter))


def run_in_own_loop(coroutine):
    """asyncio.run in a thread of its own: the caller's may run a loop already (Playwright's sync API does)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def wait_until_settled(site: Site, *, timeout_s: float) -> list[ConsentRelay]:
    """The portal's changes once none is on its way any more (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = site.changes()
        if all(r.status != "sent" for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values) or [0.0]
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def lost_changes(site: Site, outcomes: list[Outcome], rows: list[ConsentRelay]) -> list[Outcome]:
    """Changes the patient asked for that the chain does not show at the end, and that the patient was not
    clearly told failed (a 4xx answer, or the change's status "failed" with a reason)."""
    by_id = {r.id: r for r in rows}
    lost = []
    for outcome in outcomes:
        wanted = outcome.action == "grant"
        if site.holds_consent(outcome.patient) == wanted:
            continue
        told = 400 <= outcome.status < 500 or (outcome.change_id in by_id and by_id[outcome.change_id].status == "failed")
        if not told:
            lost.append(outcome)
    return lost


def summary(site: Site, outcomes: list[Outcome], rows: list[ConsentRelay]) -> dict:
    recorded = [r for r in rows if r.status == "recorded"]
    started = {o.change_id: o.started_at for o in outcomes if o.change_id is not None}
    recorded_s = [r.finished_at.replace(tzinfo=timezone.utc).timestamp() - started[r.id]
                  for r in recorded if r.id in started and r.finished_at is not None]
    transactions = {r.tx_hash for r in recorded if r.tx_hash}
    return {
        "changes": len(outcomes),
        "http_5xx": sum(1 for o in outcomes if o.status >= 500),
        "http_4xx": sum(1 for o in outcomes if 400 <= o.status < 500),
        "lost": len(lost_changes(site, outcomes, rows)),
        "failed": sum(1 for r in rows if r.status == "failed"),
        "accept_p50_s": round(percentile([o.accept_s for o in outcomes], 0.50), 3),
        "accept_p95_s": round(percentile([o.accept_s for o in outcomes], 0.95), 3),
        "recorded_p95_s": round(percentile(recorded_s, 0.95), 3),
        "relayed_per_tx": round(len(recorded) / len(transactions), 2) if transactions else 0.0,
    }


def cpu_s(pid: int) -> float:
    """User and system CPU seconds process `pid` has used (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK"), sum(ticks) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """What the changes cost, from their start to the last answer: the portal's CPU per change (its threads share
    one GIL: this bounds how fast one portal process answers) and how busy the machine's cores were meanwhile."""

    def __init__(self, pid: int):
        self.pid, self.figures = pid, {}

    def begin(self) -> None:
        self._start = (time.perf_counter(), cpu_s(self.pid), machine_busy_s())

    def end(self) -> None:
        began, portal, machine = self._start
        busy, total = (after - before for after, before in zip(machine_busy_s(), machine))
        self.figures = {"burst_s": round(time.perf_counter() - began, 2),
                        "portal_cpu_s": round(cpu_s(self.pid) - portal, 2),
                        "cores_busy_share": round(busy / total, 2) if total else 0.0}


def portal_load(*, patients: int = 500, work: Path | None = None, rpc_url: str | None = None) -> dict:
    """`patients` consent changes sent at once through the portal process (its patients logged in first): the
    figures of `summary` and of `burst_with_cpu`."""
    with tempfile.TemporaryDirectory() as scratch:
        work = work or Path(scratch)
        with chain_url(rpc_url, log_path=work / "anvil.log") as url:
            site = build_site(work, rpc_url=url, patients=patients)
            site.start_portal(relay_wait_s=0)  # the API answers once the change is in the outbox: "sent"
            meter = CpuMeter(site.service.process.pid)
            try:
                outcomes = change_all_at_once(site, meter=meter)
                rows = wait_until_settled(site, timeout_s=300)
            finally:
                site.stop_portal()
            return {**summary(site, outcomes, rows), **meter.figures,
                    "portal_cpu_per_change_ms": round(1000 * meter.figures["portal_cpu_s"] / patients, 2),
                    "portal_setup_s": round(site.setup_s, 1)}


def bench_load(*, patients: int = 500) -> dict:
    """`twinledger bench load`: the portal under `patients` changes at once, then the 10k/100k/1M consent reads."""
    return {**portal_load(patients=patients), **consent_read()}
