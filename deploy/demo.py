"""A study of any task on this machine (`twinledger study run --task ID --data DIR`), all real: anvil, the Flower
SuperLink and SuperNodes as processes, one hospital node per data file, consent on chain, the audit and the
report. The demo (`twinledger demo`) is this with the heart-disease task's demo data: four hospitals.

Each step calls the same functions the one-by-one commands use (see docs/deployment.md).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from contracts import ledger as lg
from contracts.audit import audit_study, load_usage_logs
from coordinator.report import RoundRecord, RunReport
from coordinator.report_page import write_report_page
from coordinator.settings import CoordinatorSettings
from deploy import consortium as consortium_
from deploy import processes
from deploy.consortium import Consortium
from federation.app_digest import packaged_app_digest
from federation.defaults import TRAINING
from federation.files import fresh_workdir
from federation.tasks import get_task
from federation.tasks.data_path import hospital_files, study_consent
from node import admin as node_admin

log = logging.getLogger("twinledger.demo")

DEMO_TASK = "heart-disease/v1"
HOSPITALS = get_task(DEMO_TASK).demo_data.hospitals  # node name -> UCI file
DATA_DIR = get_task(DEMO_TASK).demo_data.root()
MARKER = ".twinledger-demo"
WEB_HOSPITAL = "cleveland"


@dataclass
class DemoOptions:
    task_id: str = DEMO_TASK
    data: Path | None = None  # one file per hospital (its name is the file's stem); default: the task's demo data
    consent_file: Path | None = None  # default: DIR/consent.csv; the demo data without one: `decline_fraction`
    workdir: Path = Path("demo-run")
    report: Path | None = None
    rpc_url: str | None = None
    rounds: int = 5  # not TRAINING.num_rounds (10): FedAvg over 5 rounds, see the strategy below
    epsilon_budget: float = 3.0
    delta_exponent: int = 5
    # The share of the budget the study's evaluations may spend (the contract's default is 10 %). The demo
    # evaluates two rounds (`evaluated_rounds`), so this buys two releases; at its 225 test patients 10 % would
    # leave the pooled accuracy noise of sd about 0.5, half gives about 0.11 (docs/privacy.md, "Reading an
    # evaluation").
    evaluation_share_percent: int = 50
    decline_fraction: float = 0.1
    revoke_after_round: int = 2
    revocations_per_hospital: int = 3
    # Full batches, few clipped steps: the tuned client settings (federation.defaults.TRAINING, docs/benchmarks.md).
    local_epochs: int = TRAINING.local_epochs
    learning_rate: float = TRAINING.learning_rate
    batch_size: int = TRAINING.batch_size
    # Where the demo differs from TRAINING, on purpose: it keeps FedAvg over its 5 rounds (the benchmark's FedAdam
    # wants 10) and the tighter clipping of session 1's tuning: with clipping 1.0 its pooled accuracy fell from
    # 0.743 after round 1 to 0.705 after round 5 (more noise per round at the same budget), with 0.5 it rises.
    strategy: str = "fedavg"
    max_grad_norm: float = 0.5
    unreachable_chain_for: list[str] = field(default_factory=list)
    # Fault injection: stop this hospital's SuperNode once this round has trained (mid-round).
    stop_node_after_round: dict[str, int] = field(default_factory=dict)
    seed: int = 7
    secure_aggregation: bool = True  # Flower's SecAgg+ over the updates (off: the overhead benchmark's comparison)
    timeout_s: float = 1800.0
    # After the run: start the patient portal and the hospital console of WEB_HOSPITAL and the operator
    # console, print their addresses, and keep everything up until Ctrl-C.
    serve_web: bool = False
    portal_patients: int = 3  # WEB_HOSPITAL patients left unenrolled, each with a portal enrolment code
    on_report: Callable[[RunReport, Path], None] | None = None  # called with the report before the web pages start

    @property
    def evaluated_rounds(self) -> str:
        """The run's `evaluate-rounds`: the round after which patients revoke (the model they were in; its
        evaluation also lets their revocations reach the chain before the next round pins) and the last."""
        return ",".join(str(r) for r in sorted({self.revoke_after_round, self.rounds}) if 1 <= r <= self.rounds)


def study_data(options: DemoOptions, workdir: Path) -> tuple[dict[str, Path], dict[tuple[str, str], bool] | None]:
    """Hospital name -> records file, and (hospital, record number) -> consent (federation/tasks/data_path.py)."""
    task = get_task(options.task_id)
    if options.data is None and task.demo_data is None:
        raise ValueError(f"task {task.task_id} ships no demo data: give --data DIR (one file per hospital)")
    files = task.demo_data.files(workdir / "data") if options.data is None else hospital_files(Path(options.data))
    return files, study_consent(files, consent_file=options.consent_file, demo=options.data is None)


def run_demo(options: DemoOptions) -> RunReport:
    """The coordinator's run report with the demo's additions (`revoked`, `audit`, `baseline`, `chain`, ...)."""
    started = time.monotonic()
    rng = random.Random(options.seed)
    workdir = fresh_workdir(options.workdir, marker=MARKER, made_by="demo")
    task = get_task(options.task_id)
    hospitals, consent = study_data(options, workdir)
    logs = workdir / "logs"
    services: list[processes.Service] = []
    with ExitStack() as stack, _stopping(services):
        # 1. The chain (anvil unless --rpc-url) and the contracts.
        # The parties reach anvil over HTTPS (a TLS terminator with a certificate from the demo's consortium CA,
        # the one the SuperLink's certificates come from too), except on the overhead benchmark's insecure side.
        ca_dir = workdir / "superlink" / "ca"
        secure = os.environ.get(processes.INSECURE_LINKS_ENV) != "1"
        rpc_url = stack.enter_context(consortium_.chain_url(options.rpc_url, log_path=logs / "anvil.log",
                                                            tls_ca_dir=ca_dir if secure else None))
        chain_ca = ca_dir / "ca.pem" if rpc_url.startswith("https://") and not options.rpc_url else None
        log.info("using the chain at %s", rpc_url)
        w3 = lg.connect(rpc_url, ca_file=chain_ca)
        consortium = Consortium.deploy(w3, rpc_url=rpc_url, deployment_file=workdir / "chain" / "deployment.json",
                                       operator_key_file=workdir / "operator" / "keys" / "operator.key",
                                       chain_ca_file=chain_ca)
        deployment, deployment_file = consortium.deployment, consortium.deployment_file
        log.info("deployed Consortium at %s and ConsentRegistry at %s", deployment.consortium, deployment.consent_registry)

        # 2. The coordinator and the study (data-use agreement).
        coordinator_home = workdir / "coordinator"
        CoordinatorSettings(home=coordinator_home, rpc_url=rpc_url, deployment_file=deployment_file,
                            chain_ca_file=chain_ca, min_nodes=len(hospitals), round_timeout_s=600,
                            confirmations=0).save()  # anvil: a block per transaction, never reorganised
        consortium.add_coordinator(key_file=coordinator_home / "keys" / "coordinator.key")
        study_id = consortium.propose_study(task_id=task.task_id, purpose=task.purpose,
                                            epsilon_budget=options.epsilon_budget,
                                            delta_exponent=options.delta_exponent, rounds=options.rounds,
                                            app_digest=packaged_app_digest())  # the only app the nodes will run
        consortium.operator.set_study_evaluation_share(study_id, percent=options.evaluation_share_percent)
        log.info("study %s proposed: task %s, purpose %s, epsilon %g per hospital, %d rounds", study_id.short(12),
                 task.task_id, task.purpose, options.epsilon_budget, options.rounds)

        # 3. A hospital node per file: records, study acceptance, patients' consent.
        portal_patients: list[str] = []
        consenting: dict[str, list[str]] = {}
        for name, path in hospitals.items():
            node = consortium.add_node(name, workdir / "nodes" / name, records=[path])
            node.accept(study_id)
            numbers = list(node.patients.pseudonyms)
            if options.serve_web and name == WEB_HOSPITAL:
                # Left for a newcomer to enrol in the portal, with a key of their own.
                portal_patients = sorted(numbers)[: options.portal_patients]
                numbers = [n for n in numbers if n not in portal_patients]
            node.enrol(numbers)
            consenting[name] = [n for n in numbers if consent.get((name, n), False)] if consent is not None else \
                [n for n in numbers if rng.random() >= options.decline_fraction]
            node.consent(study_id, consenting[name])
            (report,) = node.imports
            log.info("%s: imported %d patients (%s); %d consent, %d decline",
                     name, report.imported, report.cohorts, len(consenting[name]), len(numbers) - len(consenting[name]))
        nodes = {name: node.settings for name, node in consortium.nodes.items()}
        for name in options.unreachable_chain_for:
            dead = f"http://127.0.0.1:{processes.free_port()}"
            settings = nodes[name]
            node_admin.init_node(settings.home, hospital=name, rpc_url=dead, deployment_file=deployment_file)
            log.info("%s: fault injected: its node talks to a chain that does not answer (%s)", name, dead)

        # 4. The Flower deployment engine: one SuperLink, one SuperNode per hospital.
        flwr_home = workdir / "flower"
        superlink_port = processes.free_port()
        # The SuperLink admits the node keys the hospitals recorded on chain (its node follower), nothing else.
        services.append(processes.start_superlink(port=superlink_port, state_dir=workdir / "superlink",
                                                  flwr_home=flwr_home, follow_home=coordinator_home))
        supernodes = {}
        for name, settings in nodes.items():
            supernodes[name] = processes.start_supernode(
                name=name, superlink_port=superlink_port, port=processes.free_port(), node_home=settings.home,
                flwr_home=flwr_home, log_path=logs / f"supernode-{name}.log", admit=False,
            )
            services.append(supernodes[name])
        processes.write_flower_federation(flwr_home, name="demo", superlink_port=superlink_port)
        log.info("SuperLink on 127.0.0.1:%d with %d SuperNodes", superlink_port, len(nodes))

        # 5. The run, watched round by round; revocations after round `revoke_after_round`.
        run_name = "demo"
        run = processes.flwr_run(
            federation="demo",
            run_config={
                "study-id": str(study_id), "coordinator-home": str(coordinator_home), "num-rounds": options.rounds,
                "local-epochs": options.local_epochs, "learning-rate": options.learning_rate,
                "batch-size": options.batch_size, "max-grad-norm": options.max_grad_norm, "run-name": run_name,
                "min-nodes": len(nodes), "strategy": options.strategy,
                "secure-aggregation": options.secure_aggregation, "evaluate-rounds": options.evaluated_rounds,
            },
            flwr_home=flwr_home,
            log_path=logs / "flwr-run.log",
        )
        services.append(run)
        run_report_path = coordinator_home / "runs" / run_name / "report.json"
        revoked = _watch_run(run, run_report_path, options, task.headline, consortium, consenting, study_id, rng,
                             supernodes=supernodes, deadline=started + options.timeout_s)

        # 6. The independent audit and the report.
        usage_files = [node_admin.export_usage(settings, workdir / "audit" / f"usage-{name}.json") for name, settings in nodes.items()]
        auditor = lg.Ledger(w3, deployment)
        audit = audit_study(auditor, study_id, load_usage_logs(usage_files), report=run_report_path)
        log.info("audit: %d violations over %d used pseudonyms in %d rounds", audit.violations, audit.checked, audit.rounds)
        report = RunReport.load(run_report_path)
        _mark_exclusions(revoked, report.rounds, usage_files)
        # The demo's additions: RunReport keeps keys it does not declare, and writes them back.
        report.revoked = revoked
        report.audit = audit.as_dict()
        report.baseline = {"constant_predictor_accuracy": report.rounds[-1].extra("constant_accuracy")
                           if report.rounds else None}
        report.chain = {"rpc_url": rpc_url, "chain_id": deployment.chain_id, "consortium": deployment.consortium,
                        "consent_registry": deployment.consent_registry}
        report.workdir = str(workdir)
        report.generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        report.wall_seconds = round(time.monotonic() - started, 1)
        report_path = (options.report or workdir / "report.json").resolve()
        report.save(report_path)
        page = write_report_page(report, report_path)
        log.info("report written to %s and %s", report_path, page)
        if options.on_report:
            options.on_report(report, report_path)
        if options.serve_web:
            report.web = _serve_web(
                services, workdir, node_home=nodes[WEB_HOSPITAL].home, coordinator_home=coordinator_home,
                operator_key=workdir / "operator" / "keys" / "operator.key", superlink_port=superlink_port,
                portal_patients=portal_patients,
            )
            _print_web(report.web)
            _wait_for_interrupt()
        return report


@contextmanager
def _stopping(services: list[processes.Service]) -> Iterator[None]:
    """Stop the demo's processes, last started first, however the demo ends."""
    try:
        yield
    finally:
        for service in reversed(services):
            service.stop()


def _watch_run(
    run, report_path: Path, options: DemoOptions, metric, consortium: Consortium, consenting: dict[str, list[str]],
    study_id, rng, *, supernodes, deadline
):
    """Follow the coordinator's report; after the chosen round, some consenting patients revoke."""
    revoked: list[dict] = []
    reported = 0
    while True:
        if time.monotonic() > deadline:
            raise processes.ProcessError(f"the run did not finish within {options.timeout_s:g} s")
        state = RunReport.load_if_present(report_path)
        rounds = state.rounds if state else []
        # Revoke as soon as the chosen round has trained: the next round pins a later block.
        if len(rounds) >= options.revoke_after_round and not revoked and options.revocations_per_hospital:
            revoked = _revoke_some(options, consortium, consenting, study_id, rng)
        for name, after in options.stop_node_after_round.items():
            if len(rounds) >= after and supernodes[name].alive():
                supernodes[name].stop()
                log.info("%s: fault injected: its SuperNode stopped during round %d", name, after)
        for record in rounds[reported:]:
            if record.status != "done":
                break
            reported += 1
            value = record.value(metric.name)
            log.info("round %d of %d done: pinned block %s, %s, patients used %s%s", record.round,
                     options.rounds, record.block, "not evaluated" if value is None
                     else f"{metric.name} {value:.3f} (one noisy DP release)", record.used,
                     f", refused: {sorted(record.errors)}" if record.errors else "")
        if (state and state.status in ("finished", "failed")) or not run.alive():
            break
        time.sleep(0.5)
    run.process.wait(timeout=60)
    state = RunReport.load_if_present(report_path)
    if state is None or state.status != "finished":
        raise processes.ProcessError(
            f"the federated run did not finish (status {state and state.status!r}: {state and state.message}); "
            f"its log ends:\n{run.tail(40)}"
        )
    return revoked


def _mark_exclusions(revoked: list[dict], rounds: list[RoundRecord], usage_files: list[Path]) -> None:
    """For each revocation: the rounds that pinned a later block, and how often the node used the patient
    in them (from the node's own usage log; the audit checks the same against the chain)."""
    used_in: dict[str, set[int]] = {}
    for path in usage_files:
        for entry in json.loads(path.read_text())["entries"]:
            for pseudonym in entry["pseudonyms"]:
                used_in.setdefault(pseudonym, set()).add(entry["round"])
    for revocation in revoked:
        later = [r.round for r in rounds if r.block is not None and r.block >= revocation["block"]]
        revocation["rounds_after"] = later
        revocation["used_after_revocation"] = len(used_in.get(revocation["pseudonym"], set()) & set(later))


def _revoke_some(options, consortium: Consortium, consenting: dict[str, list[str]], study_id, rng) -> list[dict]:
    revoked = []
    for name, node in consortium.nodes.items():
        if name in options.unreachable_chain_for or name in options.stop_node_after_round:
            continue
        for number in rng.sample(consenting[name], min(options.revocations_per_hospital, len(consenting[name]))):
            block = node.revoke(study_id, number)
            revoked.append({"pseudonym": node.patients.pseudonyms[number], "block": block, "hospital": name})
    log.info("%d patients revoked their consent (blocks %d-%d)", len(revoked),
             min(r["block"] for r in revoked), max(r["block"] for r in revoked))
    return revoked


def _serve_web(services: list, workdir: Path, *, node_home: Path, coordinator_home: Path, operator_key: Path,
               superlink_port: int, portal_patients: list[str]) -> dict:
    """Start the three web servers as processes (as `twinledger portal serve`, `node console` and `console serve`
    would be started by hand) with a token for each console and enrolment codes for the held-back patients."""
    from coordinator.console.cli import create_token as create_operator_token
    from node.console.cli import create_console_token
    from node.portal.admin import issue_enrolment_code

    superlink = f"127.0.0.1:{superlink_port}"
    (coordinator_home / "console.toml").write_text(
        f'superlink = "{superlink}"\noperator-key-file = "{operator_key}"\n'
    )
    web = {
        "hospital": WEB_HOSPITAL,
        "enrolment_codes": {number: issue_enrolment_code(node_home, number).code for number in portal_patients},
        "node_console_token": create_console_token(node_home, name="demo-it", role="it-admin"),
        "operator_token": create_operator_token(coordinator_home, name="demo-operator", role="operator"),
    }
    # HTTPS, as in production: one certificate for localhost from the demo's consortium CA (the development CA
    # the SuperLink created in its state directory, coordinator.processes.link_tls); trust its ca.pem to browse.
    from coordinator import ca as cax

    authority = cax.load_ca(workdir / "superlink" / "ca")
    issued = cax.issue_server_certificate(authority, workdir / "web-tls", "web", dns_names=["localhost"],
                                          ip_addresses=["127.0.0.1"])
    tls = ["--tls-certfile", str(issued.cert_path), "--tls-keyfile", str(issued.key_path)]
    web["ca_certificate"] = str(authority.cert_path)
    twinledger = str(processes.VENV_BIN / "twinledger")
    commands = {
        "portal": [twinledger, "portal", "serve", "--home", str(node_home)],
        "node_console": [twinledger, "node", "console", "--home", str(node_home), "--superlink", superlink],
        "operator_console": [twinledger, "console", "serve", "--home", str(coordinator_home)],
    }
    for name, command in commands.items():
        port = processes.free_port()
        service = processes.start(name, [*command, *tls, "--port", str(port)], log_path=workdir / "logs" / f"{name}.log")
        services.append(service)
        processes.wait_until(service, lambda port=port: processes.port_open(port), timeout_s=60, what=f"{name} on port {port}")
        web[name] = f"https://localhost:{port}/"
    return web


def _print_web(web: dict) -> None:
    codes = ", ".join(f"{code} (record {number})" for number, code in web["enrolment_codes"].items())
    print(f"""
Click through (everything stays up until Ctrl-C):
  Patient portal of {web['hospital']}:  {web['portal']}enrol   enrolment codes: {codes or 'none'}
  Hospital IT console ({web['hospital']}): {web['node_console']}   token: {web['node_console_token']}
  Operator console:               {web['operator_console']}   token: {web['operator_token']}
""", flush=True)


def _wait_for_interrupt() -> None:
    import signal

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)  # a service manager's stop, like Ctrl-C
    signal.signal(signal.SIGINT, _stop)  # also when started in the background, where SIGINT is ignored
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("stopping the demo's processes")
