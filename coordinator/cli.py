"""The coordinator's commands of `twinledger`: its home, the Flower SuperLink, a study's run, the operator console.

    twinledger coordinator init                     create the coordinator's home and key
    twinledger coordinator superlink                run the Flower SuperLink
    twinledger coordinator run                      run a study's training on the SuperLink
    twinledger console serve|token                  the operator console (coordinator/console/cli.py)

`add_coordinator_commands(subparsers)` adds the `coordinator` group. `coordinator run` submits the packaged
Flower app (coordinator/flower_app, coordinator/processes.py) with `flwr run` and reads the run's report.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from contracts import ledger as lg
from contracts.cli import add_rpc_url, gas_hint
from coordinator import processes
from federation.defaults import TRAINING
from federation.ids import StudyId

# Training parameters that `coordinator run` passes on only when given (else the Flower app's run config applies,
# which equals federation.defaults.TRAINING).
TRAINING_OPTIONS = {"rounds": "num-rounds", "local_epochs": "local-epochs", "learning_rate": "learning-rate",
                    "batch_size": "batch-size", "max_grad_norm": "max-grad-norm", "strategy": "strategy",
                    "server_learning_rate": "server-learning-rate"}


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix: printed as one line, exit status 2."""
    from coordinator.settings import SettingsError

    return (SettingsError,)


def _coordinator_init(args) -> int:
    from eth_account import Account

    from coordinator.settings import CoordinatorSettings

    settings = CoordinatorSettings(home=Path(args.home).resolve(), rpc_url=args.rpc_url,
                                   deployment_file=Path(args.deployment_file).resolve(), min_nodes=args.min_nodes)
    settings.save()
    if not settings.key_file.exists():
        lg.write_key(settings.key_file)
    address = Account.from_key(lg.load_key(settings.key_file)).address
    print(f"coordinator home {settings.home}; account {address} "
          f"(the operator grants it the coordinator role: twinledger study grant-coordinator; {gas_hint(address)})")
    return 0


def _coordinator_superlink(args) -> int:
    command = processes.superlink_command(database=Path(args.database).resolve(), host=args.host, port=args.port)
    os.execve(command[0], ["flower-superlink", *command[1:]], processes.flower_env(Path(args.flwr_home)))


def _coordinator_run(args) -> int:
    from coordinator.settings import CoordinatorSettings, SettingsError

    study_id = StudyId.parse(args.study)
    host, port = processes.superlink_address(args.superlink)
    home = Path(args.home).resolve()
    try:
        settings = CoordinatorSettings.load(home)
    except SettingsError as exc:
        if args.min_nodes is None:
            raise SettingsError(f"{exc} (or pass --min-nodes if the coordinator home is on another machine)") from None
        settings = None  # the home is on the SuperLink's machine: its report is there too
    run_config = {
        "study-id": str(study_id), "coordinator-home": str(home), "run-name": args.run_name,
        "min-nodes": args.min_nodes if args.min_nodes is not None else settings.min_nodes,
    }
    for option, key in TRAINING_OPTIONS.items():
        if getattr(args, option) is not None:
            run_config[key] = getattr(args, option)

    flwr_home = Path(args.flwr_home).resolve()  # `flwr run` runs in the app's directory, not here
    processes.write_flower_federation(flwr_home, name="consortium", superlink_port=port, host=host)
    started = time.time()
    run = processes.flwr_run(federation="consortium", run_config=run_config, flwr_home=flwr_home, log_path=Path(args.log))
    print(f"run submitted to {host}:{port}; streaming its log to {args.log}", flush=True)
    code = run.process.wait()
    if settings is None:
        print(f"the report is on the coordinator's machine: {home}/runs/{args.run_name or 'run-<Flower run id>'}/report.json")
        return code
    return _check_report(settings.runs_dir, args.run_name, started=started, log=args.log, flwr_code=code)


def _check_report(runs_dir: Path, run_name: str, *, started: float, log: str, flwr_code: int) -> int:
    """Print the run report's path and outcome; 0 only if this run's report says `finished`."""
    if run_name:
        candidates = [runs_dir / run_name / "report.json"]
    else:  # the ServerApp names the run after Flower's run id: take the newest report
        candidates = sorted(runs_dir.glob("*/report.json"), key=lambda p: p.stat().st_mtime, reverse=True)[:1]
    report_path = next((p for p in candidates if p.exists() and p.stat().st_mtime >= started - 1), None)
    if report_path is None:
        print(f"twinledger: the run wrote no report (flwr run exited with status {flwr_code}); see {log}",
              file=sys.stderr)
        return flwr_code or 1
    report = json.loads(report_path.read_text())
    status = report.get("status")
    if status != "finished":
        print(f"twinledger: the run is {status}: {report.get('message') or '(no message)'}; see {log}", file=sys.stderr)
        print(f"Report: {report_path}")
        return 1
    rounds = report.get("rounds", [])
    anchored = sum(1 for r in rounds if r.get("anchor_block") is not None)
    print(f"run finished: {len(rounds)} round(s), {anchored} anchored")
    print(f"Report: {report_path}")
    return 0


def add_coordinator_commands(subparsers) -> None:
    coord = subparsers.add_parser("coordinator", help="the consortium's coordinator").add_subparsers(dest="action",
                                                                                                    required=True)
    init = coord.add_parser("init", help="create a coordinator home with its key")
    init.add_argument("--home", required=True, help="the coordinator's home directory (created if missing)")
    add_rpc_url(init)
    init.add_argument("--deployment-file", required=True, help="the consortium's deployment.json")
    init.add_argument("--min-nodes", type=int, default=1, help="SuperNodes a run waits for (default 1)")
    init.set_defaults(func=_coordinator_init)
    link = coord.add_parser("superlink", help="run the Flower SuperLink")
    link.add_argument("--host", default="127.0.0.1",
                      help="address the SuperLink listens on (default 127.0.0.1; 0.0.0.0 for every interface)")
    link.add_argument("--database", default="superlink-state.db", help="the SuperLink's state file (default superlink-state.db)")
    link.add_argument("--port", type=int, default=8000, help="port of its Fleet, Control and Runtime APIs (default 8000)")
    link.add_argument("--flwr-home", default=".flwr", help="Flower's home for the SuperLink (default .flwr)")
    link.set_defaults(func=_coordinator_superlink)
    run = coord.add_parser("run", help="run a study's training on the SuperLink; exits 0 only if the run finished")
    run.add_argument("--home", required=True, help="the coordinator's home (a path on the SuperLink's machine)")
    run.add_argument("--study", required=True, help="the study id (0x and 64 hex digits)")
    run.add_argument("--superlink", default="127.0.0.1:8000", help="the SuperLink, HOST:PORT (default 127.0.0.1:8000)")
    run.add_argument("--rounds", type=int, help=f"rounds to run, at most the study's (default {TRAINING.num_rounds})")
    run.add_argument("--min-nodes", type=int, help="SuperNodes to wait for (default: min-nodes in coordinator.toml)")
    run.add_argument("--local-epochs", type=int, help=f"epochs each node trains per round (default {TRAINING.local_epochs})")
    run.add_argument("--learning-rate", type=float, help=f"SGD learning rate at the nodes (default {TRAINING.learning_rate})")
    run.add_argument("--batch-size", type=int, help=f"expected batch size at the nodes (default {TRAINING.batch_size}: full batches)")
    run.add_argument("--max-grad-norm", type=float, help=f"DP-SGD per-example clipping norm (default {TRAINING.max_grad_norm})")
    run.add_argument("--strategy", choices=("fedavg", "fedadam", "fedyogi"), help=f"server aggregation (default {TRAINING.strategy})")
    run.add_argument("--server-learning-rate", type=float, help=f"FedAdam's and FedYogi's server learning rate (default {TRAINING.server_learning_rate})")
    run.add_argument("--run-name", default="run",
                     help="report folder under <home>/runs/ (default run; an existing report of that name is replaced)")
    run.add_argument("--flwr-home", default=".flwr", help="Flower's home for flwr run (default .flwr)")
    run.add_argument("--log", default="flwr-run.log", help="where to stream the run's log (default flwr-run.log)")
    run.set_defaults(func=_coordinator_run)
