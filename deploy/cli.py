"""`twinledger`: the command line for the demo and for running each part on its own.

    twinledger demo [--report PATH] [--serve ...]   the whole federation on this machine, then its web pages
    twinledger chain start                          a local development chain (anvil)
    twinledger chain deploy                         compile and deploy the contracts
    twinledger chain fund ADDRESS [--ether N]       send ether for gas from a dev chain's unlocked account
    twinledger study propose                        the operator proposes a study; prints its id
    twinledger study register-hospital ACCOUNT      the operator registers a hospital's account
    twinledger study grant-coordinator ACCOUNT      the operator lets an account anchor rounds
    twinledger node init                            create a hospital node's home and keys
    twinledger node import FILE                     import patient records (CSV or FHIR R4 Bundle)
    twinledger node accept-study STUDY              accept a study with the hospital's account
    twinledger node start                           run the node's Flower SuperNode
    twinledger node export-usage                    export the node's usage log for auditors
    twinledger node console                         run the hospital IT console (web, 127.0.0.1)
    twinledger node console-token                   create or revoke a hospital staff member's console token
    twinledger portal serve                         run the hospital's patient portal (127.0.0.1)
    twinledger portal staff-token                   print the token hospital staff use on the portal
    twinledger portal enrolment-code RECORD         issue a patient a one-time enrolment code
    twinledger coordinator init                     create the coordinator's home and key
    twinledger coordinator superlink                run the Flower SuperLink
    twinledger coordinator run                      run a study's training on the SuperLink
    twinledger console serve                        run the operator console (web, 127.0.0.1)
    twinledger console token                        create an operator's or observer's console token
    twinledger twin calibrate                       calibrate a patient's twin (--virtual-patient NAME | --csv FILE)
    twinledger twin forecast                        a patient's glucose over the next hours, with bands
    twinledger twin whatif                          compare treatment plans; --plot writes a PNG
    twinledger twin heart                           a heart-disease patient's risk at treatment targets (associational)
    twinledger audit                                check every anchored round against the chain
    twinledger bench NAME [--json]                  benchmarks (ledger, training, overhead, twin)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from contracts import ledger as lg

DEFAULT_RPC_URL = "http://127.0.0.1:8545"


def _rpc_url_default() -> str:
    return os.environ.get("TWINLEDGER_RPC_URL", DEFAULT_RPC_URL)


def _study_id(text: str) -> bytes:
    """A study id as given on the command line: 32 bytes, as 64 hex digits with or without 0x."""
    digits = text.removeprefix("0x")
    try:
        value = bytes.fromhex(digits)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise ValueError(f"a study id is 32 bytes written as 64 hex digits (0x...), got {text!r}")
    return value


def _address(text: str) -> str:
    from eth_utils import is_address, to_checksum_address

    if not is_address(text):
        raise ValueError(f"not an account address (0x and 40 hex digits): {text!r}")
    return to_checksum_address(text)


def _gas_hint(address: str) -> str:
    return f"it needs ether for gas: on a dev chain, twinledger chain fund {address}"


def _hospital_round(value: str) -> tuple[str, int]:
    hospital, _, round_number = value.partition(":")
    if not hospital or not round_number.isdigit():
        raise ValueError(f"--stop-node-after-round takes HOSPITAL:ROUND, got {value!r}")
    return hospital, int(round_number)


def _demo(args) -> int:
    from deploy.demo import DemoOptions, run_demo

    options = DemoOptions(
        workdir=Path(args.workdir), report=Path(args.report) if args.report else None, rpc_url=args.rpc_url,
        rounds=args.rounds, epsilon_budget=args.epsilon, revoke_after_round=args.revoke_after_round,
        unreachable_chain_for=args.unreachable_chain_for or [], timeout_s=args.timeout_s,
        stop_node_after_round=dict(_hospital_round(v) for v in args.stop_node_after_round or []),
    )
    options.serve_web = args.serve == "always" or (args.serve == "auto" and sys.stdin.isatty())
    options.on_report = _print_demo_summary
    report = run_demo(options)
    return 0 if report["audit"]["violations"] == 0 else 1


def _print_demo_summary(report: dict, report_path: Path) -> None:
    final = report["rounds"][-1] if report["rounds"] else {}
    print()
    print(f"Demo finished in {report['wall_seconds']} s: {len(report['rounds'])} rounds, "
          f"final accuracy {final.get('accuracy')}, audit violations {report['audit']['violations']}.")
    for hospital in report["hospitals"]:
        print(f"  {hospital['name']:<12} patients {hospital['patients']:>4}  consented {hospital['consented']}  "
              f"epsilon {hospital['epsilon_spent']:.2f} of {hospital['epsilon_budget']:g}")
    print(f"Report: {report_path}")
    print(f"Page:   {report_path.with_suffix('.html')}", flush=True)


class _Terminated(Exception):
    """SIGTERM arrived."""


def _raise_terminated(signum, frame):
    raise _Terminated


def _chain_start(args) -> int:
    from deploy import processes

    service, url = processes.start_anvil(port=args.port, log_path=Path(args.log), host=args.host)
    listening = f" (listening on {args.host})" if args.host != "127.0.0.1" else ""
    print(f"anvil serving JSON-RPC at {url}{listening} (log {args.log}); Ctrl-C or SIGTERM stops it", flush=True)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = service.process.wait()
    except (KeyboardInterrupt, _Terminated):
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        service.stop()
    print(f"twinledger: anvil exited with status {code}; its log ends:\n{service.tail()}", file=sys.stderr)
    return 1


def _chain_deploy(args) -> int:
    w3 = lg.connect(args.rpc_url)
    key_path = Path(args.operator_key)
    if not key_path.exists():
        lg.write_key(key_path)
        if args.fund_from_dev_account:
            from eth_account import Account

            lg.fund_from_dev_account(w3, Account.from_key(lg.load_key(key_path)).address)
    deployment = lg.deploy(w3, lg.load_key(key_path))
    deployment.save(Path(args.out))
    print(f"Consortium {deployment.consortium}, ConsentRegistry {deployment.consent_registry}; wrote {args.out}")
    return 0


def _chain_fund(args) -> int:
    address = _address(args.address)
    if args.ether <= 0:
        raise ValueError(f"--ether must be positive, got {args.ether}")
    w3 = lg.connect(args.rpc_url)
    lg.fund_from_dev_account(w3, address, ether=args.ether)
    balance = w3.from_wei(w3.eth.get_balance(address), "ether")
    print(f"sent {args.ether} ether to {address}; its balance is {balance} ether")
    return 0


def _operator(args) -> lg.Ledger:
    return lg.Ledger.open(args.rpc_url, Path(args.deployment_file), key_path=Path(args.operator_key))


def _study_propose(args) -> int:
    operator = _operator(args)
    study_id = lg.new_study_id()
    operator.propose_study(
        study_id, purpose=args.purpose, task_id=args.task, epsilon_budget=args.epsilon, delta_exponent=args.delta_exponent,
        rounds=args.rounds, ends_at=int(time.time()) + args.days * 24 * 3600,
    )
    print("0x" + study_id.hex())
    return 0


def _hospital_register(args) -> int:
    import secrets

    _operator(args).register_hospital(args.account, secrets.token_bytes(32))
    print(f"registered hospital {args.account}")
    return 0


def _node_init(args) -> int:
    from node import admin

    settings = admin.init_node(Path(args.home), hospital=args.hospital, rpc_url=args.rpc_url,
                               deployment_file=Path(args.deployment_file).resolve() if args.deployment_file else None,
                               database_url=args.database_url)
    address = admin.hospital_address(settings)
    print(f"node home {settings.home}; hospital account {address} "
          f"(ask the consortium operator to register it; {_gas_hint(address)})")
    return 0


def _node_settings(args):
    from node.settings import NodeSettings

    return NodeSettings.load(args.home)


def _node_import(args) -> int:
    from node import admin

    report = admin.import_records(_node_settings(args), Path(args.file), record_prefix=args.record_prefix,
                                  cohort=args.cohort)
    print(f"imported {report.imported} patients from {report.source} ({report.cohorts}); "
          f"{report.already_present} already present")
    return 0


def _node_accept(args) -> int:
    from node import admin

    study_id = _study_id(args.study)
    admin.open_ledger(_node_settings(args)).accept_study(study_id)
    print(f"accepted study {args.study}")
    return 0


def _node_start(args) -> int:
    from deploy import processes

    settings = _node_settings(args)
    command = processes.supernode_command(warm=not args.stock_supernode)
    os.execve(
        command[0],
        [*command, "--insecure", "--superlink", args.superlink, "--port", str(args.port),
         "--node-config", f'node-home="{settings.home}"'],
        processes.flower_env(Path(args.flwr_home)),
    )


def _portal_serve(args) -> int:
    from node.portal.admin import serve

    serve(Path(args.home), port=args.port)
    return 0


def _portal_staff_token(args) -> int:
    from node.portal.admin import staff_token

    print(staff_token(Path(args.home)))
    return 0


def _portal_code(args) -> int:
    from node.portal.accounts import PortalError
    from node.portal.admin import issue_enrolment_code

    try:
        issued = issue_enrolment_code(Path(args.home), args.record_number)
    except PortalError as exc:
        print(f"twinledger: {exc}", file=sys.stderr)
        return 2
    print(f"{issued.code}  (for record {issued.record_number}; valid until {issued.expires_at:%Y-%m-%d %H:%M} UTC; "
          "shown once)")
    return 0


def _node_export(args) -> int:
    from node import admin

    print(admin.export_usage(_node_settings(args), Path(args.out)))
    return 0


def _coordinator_init(args) -> int:
    from coordinator.settings import CoordinatorSettings

    settings = CoordinatorSettings(home=Path(args.home).resolve(), rpc_url=args.rpc_url,
                                   deployment_file=Path(args.deployment_file).resolve(), min_nodes=args.min_nodes)
    settings.save()
    if not settings.key_file.exists():
        lg.write_key(settings.key_file)
    from eth_account import Account

    address = Account.from_key(lg.load_key(settings.key_file)).address
    print(f"coordinator home {settings.home}; account {address} "
          f"(the operator grants it the coordinator role: twinledger study grant-coordinator; {_gas_hint(address)})")
    return 0


def _grant_coordinator(args) -> int:
    _operator(args).grant_coordinator(args.account)
    print(f"granted the coordinator role to {args.account}")
    return 0


def _coordinator_superlink(args) -> int:
    from deploy import processes

    os.execve(
        str(processes.VENV_BIN / "flower-superlink"),
        ["flower-superlink", "--insecure", "--database", str(Path(args.database).resolve()), "--host", args.host,
         "--port", str(args.port), "--disable-runtime-dependency-installation"],
        processes.flower_env(Path(args.flwr_home)),
    )


# Training parameters that `coordinator run` passes on only when given (else pyproject.toml's run config applies).
TRAINING_OPTIONS = {"rounds": "num-rounds", "local_epochs": "local-epochs", "learning_rate": "learning-rate",
                    "batch_size": "batch-size", "max_grad_norm": "max-grad-norm", "strategy": "strategy",
                    "server_learning_rate": "server-learning-rate"}


def _superlink_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--superlink must be HOST:PORT, got {text!r}")
    return host, int(port)


def _coordinator_run(args) -> int:
    from coordinator.settings import CoordinatorSettings, SettingsError
    from deploy import processes

    study_id = _study_id(args.study)
    host, port = _superlink_address(args.superlink)
    home = Path(args.home).resolve()
    try:
        settings = CoordinatorSettings.load(home)
    except SettingsError as exc:
        if args.min_nodes is None:
            raise SettingsError(f"{exc} (or pass --min-nodes if the coordinator home is on another machine)") from None
        settings = None  # the home is on the SuperLink's machine: its report is there too
    run_config = {
        "study-id": "0x" + study_id.hex(), "coordinator-home": str(home), "run-name": args.run_name,
        "min-nodes": args.min_nodes if args.min_nodes is not None else settings.min_nodes,
    }
    for option, key in TRAINING_OPTIONS.items():
        if getattr(args, option) is not None:
            run_config[key] = getattr(args, option)

    flwr_home = Path(args.flwr_home).resolve()  # `flwr run` runs in the project directory, not here
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


def _audit(args) -> int:
    from contracts.audit import audit_study, load_usage_logs

    study_id = _study_id(args.study)
    auditor = lg.Ledger(lg.connect(args.rpc_url), lg.Deployment.load(Path(args.deployment_file)))
    result = audit_study(auditor, study_id, load_usage_logs([Path(p) for p in args.usage]))
    print(json.dumps(result.as_dict(), indent=1))
    return 0 if result.violations == 0 else 1


def _bench(args) -> int:
    from deploy import bench

    kwargs = {"patients": args.patients} if args.patients else {}
    if args.seeds:
        if args.name != "training":
            raise ValueError("--seeds applies to the training benchmark only")
        kwargs["seeds"] = args.seeds
    return bench.run(args.name, as_json=args.json, **kwargs)


def _rpc_arg(parser) -> None:
    parser.add_argument("--rpc-url", default=_rpc_url_default(),
                        help=f"the chain's JSON-RPC URL (default $TWINLEDGER_RPC_URL, else {DEFAULT_RPC_URL})")


def _chain_args(parser, *, operator=False) -> None:
    _rpc_arg(parser)
    parser.add_argument("--deployment-file", default=os.environ.get("TWINLEDGER_DEPLOYMENT_FILE", "deployment.json"),
                        help="the deployment file written by chain deploy (default $TWINLEDGER_DEPLOYMENT_FILE, "
                             "else deployment.json)")
    if operator:
        parser.add_argument("--operator-key", default="operator.key", help="hex private key file of the operator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twinledger", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a demo federation of four hospitals on this machine")
    demo.add_argument("--workdir", default="demo-run", help="where the demo keeps its chain, nodes and logs")
    demo.add_argument("--report", help="where to write the JSON report (an HTML page goes next to it)")
    demo.add_argument("--rpc-url", help="use this running chain instead of starting anvil")
    demo.add_argument("--rounds", type=int, default=5, help="training rounds (default 5)")
    demo.add_argument("--epsilon", type=float, default=3.0, help="privacy budget per hospital (delta 1e-5)")
    demo.add_argument("--revoke-after-round", type=int, default=2,
                      help="after this round some patients revoke their consent (default 2)")
    demo.add_argument("--stop-node-after-round", action="append", metavar="HOSPITAL:ROUND",
                      help="fault injection: stop this hospital's SuperNode once that round has trained")
    demo.add_argument("--unreachable-chain-for", action="append", metavar="HOSPITAL",
                      help="fault injection: this hospital's node gets a chain URL that does not answer")
    demo.add_argument("--timeout-s", type=float, default=1800.0, help="give up after this many seconds (default 1800)")
    demo.add_argument("--serve", choices=("auto", "always", "never"), default="auto",
                      help="after the run, serve the patient portal, the hospital IT console and the operator console "
                           "and print their addresses, until Ctrl-C (auto: only when run from a terminal)")
    demo.set_defaults(func=_demo)

    chain = sub.add_parser("chain", help="a local chain and the contracts").add_subparsers(dest="action", required=True)
    start = chain.add_parser("start", help="run anvil, a development chain; Ctrl-C or SIGTERM stops it")
    start.add_argument("--host", default="127.0.0.1",
                       help="address anvil listens on (default 127.0.0.1; 0.0.0.0 for every interface)")
    start.add_argument("--port", type=int, default=8545, help="JSON-RPC port (default 8545)")
    start.add_argument("--log", default="anvil.log", help="anvil's log file (default anvil.log)")
    start.set_defaults(func=_chain_start)
    deploy = chain.add_parser("deploy", help="compile and deploy the contracts")
    _rpc_arg(deploy)
    deploy.add_argument("--operator-key", default="operator.key", help="the operator's key file; created if missing")
    deploy.add_argument("--fund-from-dev-account", action="store_true", help="fund a new operator key (dev chains)")
    deploy.add_argument("--out", default="deployment.json", help="where to write the deployment file (default deployment.json)")
    deploy.set_defaults(func=_chain_deploy)
    fund = chain.add_parser("fund", help="send ether for gas to an account from a dev chain's unlocked account")
    fund.add_argument("address", help="the account to fund (a hospital's or the coordinator's)")
    fund.add_argument("--ether", type=int, default=10, help="how much ether to send (default 10)")
    _rpc_arg(fund)
    fund.set_defaults(func=_chain_fund)

    study = sub.add_parser("study", help="consortium operator actions").add_subparsers(dest="action", required=True)
    propose = study.add_parser("propose", help="propose a study; prints its id")
    _chain_args(propose, operator=True)
    propose.add_argument("--purpose", default="HRESCH", help="HL7 v3 PurposeOfUse code (default HRESCH)")
    propose.add_argument("--task", default="heart-disease/v1", help="federated task id (default heart-disease/v1)")
    propose.add_argument("--epsilon", type=float, default=3.0, help="privacy budget per hospital (default 3.0)")
    propose.add_argument("--delta-exponent", type=int, default=5, help="delta = 10^-N (default 5)")
    propose.add_argument("--rounds", type=int, default=5, help="rounds the study allows (default 5)")
    propose.add_argument("--days", type=int, default=30, help="the study ends this many days from now (default 30)")
    propose.set_defaults(func=_study_propose)
    register = study.add_parser("register-hospital", help="register a hospital's account")
    _chain_args(register, operator=True)
    register.add_argument("account", help="the hospital's account address (printed by node init)")
    register.set_defaults(func=_hospital_register)
    grant = study.add_parser("grant-coordinator", help="let an account anchor rounds")
    _chain_args(grant, operator=True)
    grant.add_argument("account", help="the coordinator's account address (printed by coordinator init)")
    grant.set_defaults(func=_grant_coordinator)

    node = sub.add_parser("node", help="a hospital node").add_subparsers(dest="action", required=True)
    home_help = "the node's home directory"
    init = node.add_parser("init", help="create a node home with its keys")
    init.add_argument("--home", required=True, help=home_help + " (created if missing)")
    init.add_argument("--hospital", required=True, help="the hospital's name, as reported to the coordinator")
    _rpc_arg(init)
    init.add_argument("--deployment-file", help="the consortium's deployment.json (the node refuses every round without it)")
    init.add_argument("--database-url", default="", help="any SQLAlchemy URL; default SQLite in the home")
    init.set_defaults(func=_node_init)
    imp = node.add_parser("import", help="import patient records (CSV or FHIR Bundle: heart disease, or twins' type 1 diabetes data)")
    imp.add_argument("--home", required=True, help=home_help)
    imp.add_argument("--record-prefix", help="prefix of generated record numbers (default: first three letters of the hospital)")
    imp.add_argument("--cohort", choices=("train", "test"),
                     help="twins' records only: every patient of the file in this cohort (default: a third test)")
    imp.add_argument("file", help="UCI Heart Disease file, CSV with a header row, twins' CSV, or FHIR Bundle (.json)")
    imp.set_defaults(func=_node_import)
    accept = node.add_parser("accept-study", help="accept a study with the hospital's account")
    accept.add_argument("--home", required=True, help=home_help)
    accept.add_argument("study", help="the study id (0x and 64 hex digits)")
    accept.set_defaults(func=_node_accept)
    nstart = node.add_parser("start", help="run the node's Flower SuperNode")
    nstart.add_argument("--home", required=True, help=home_help)
    nstart.add_argument("--superlink", default="127.0.0.1:8000", help="the coordinator's SuperLink, HOST:PORT (default 127.0.0.1:8000)")
    nstart.add_argument("--port", type=int, default=9101, help="local port for the SuperNode's ClientApp processes (default 9101)")
    nstart.add_argument("--flwr-home", default=".flwr", help="Flower's home for this SuperNode (default .flwr)")
    nstart.add_argument("--stock-supernode", action="store_true",
                        help="Flower's flower-supernode as is (a fresh ClientApp process per message, 3 s idle poll)")
    nstart.set_defaults(func=_node_start)
    export = node.add_parser("export-usage", help="export the node's usage log for auditors")
    export.add_argument("--home", required=True, help=home_help)
    export.add_argument("--out", required=True, help="the JSON file to write")
    export.set_defaults(func=_node_export)
    from node.console.cli import add_node_console_commands

    add_node_console_commands(node)

    portal = sub.add_parser("portal", help="the hospital's patient portal").add_subparsers(dest="action", required=True)
    pserve = portal.add_parser("serve", help="run the patient portal on 127.0.0.1 (put a TLS proxy in front)")
    pserve.add_argument("--home", required=True, help=home_help)
    pserve.add_argument("--port", type=int, default=8800, help="local port (default 8800)")
    pserve.set_defaults(func=_portal_serve)
    ptoken = portal.add_parser("staff-token", help="print the staff token (created in <home>/keys/staff.token)")
    ptoken.add_argument("--home", required=True, help=home_help)
    ptoken.set_defaults(func=_portal_staff_token)
    pcode = portal.add_parser("enrolment-code", help="issue a one-time enrolment code for a patient")
    pcode.add_argument("--home", required=True, help=home_help)
    pcode.add_argument("record_number", help="the patient's record number")
    pcode.set_defaults(func=_portal_code)

    coord = sub.add_parser("coordinator", help="the consortium's coordinator").add_subparsers(dest="action", required=True)
    cinit = coord.add_parser("init", help="create a coordinator home with its key")
    cinit.add_argument("--home", required=True, help="the coordinator's home directory (created if missing)")
    _rpc_arg(cinit)
    cinit.add_argument("--deployment-file", required=True, help="the consortium's deployment.json")
    cinit.add_argument("--min-nodes", type=int, default=1, help="SuperNodes a run waits for (default 1)")
    cinit.set_defaults(func=_coordinator_init)
    link = coord.add_parser("superlink", help="run the Flower SuperLink")
    link.add_argument("--host", default="127.0.0.1",
                      help="address the SuperLink listens on (default 127.0.0.1; 0.0.0.0 for every interface)")
    link.add_argument("--database", default="superlink-state.db", help="the SuperLink's state file (default superlink-state.db)")
    link.add_argument("--port", type=int, default=8000, help="port of its Fleet, Control and Runtime APIs (default 8000)")
    link.add_argument("--flwr-home", default=".flwr", help="Flower's home for the SuperLink (default .flwr)")
    link.set_defaults(func=_coordinator_superlink)
    crun = coord.add_parser("run", help="run a study's training on the SuperLink; exits 0 only if the run finished")
    crun.add_argument("--home", required=True, help="the coordinator's home (a path on the SuperLink's machine)")
    crun.add_argument("--study", required=True, help="the study id (0x and 64 hex digits)")
    crun.add_argument("--superlink", default="127.0.0.1:8000", help="the SuperLink, HOST:PORT (default 127.0.0.1:8000)")
    crun.add_argument("--rounds", type=int, help="rounds to run, at most the study's (default 10)")
    crun.add_argument("--min-nodes", type=int, help="SuperNodes to wait for (default: min-nodes in coordinator.toml)")
    crun.add_argument("--local-epochs", type=int, help="epochs each node trains per round (default 3)")
    crun.add_argument("--learning-rate", type=float, help="SGD learning rate at the nodes (default 1.0)")
    crun.add_argument("--batch-size", type=int, help="expected batch size at the nodes (default 1024: full batches)")
    crun.add_argument("--max-grad-norm", type=float, help="DP-SGD per-example clipping norm (default 1.0)")
    crun.add_argument("--strategy", choices=("fedavg", "fedadam", "fedyogi"), help="server aggregation (default fedadam)")
    crun.add_argument("--server-learning-rate", type=float, help="FedAdam's and FedYogi's server learning rate (default 0.1)")
    crun.add_argument("--run-name", default="run",
                      help="report folder under <home>/runs/ (default run; an existing report of that name is replaced)")
    crun.add_argument("--flwr-home", default=".flwr", help="Flower's home for flwr run (default .flwr)")
    crun.add_argument("--log", default="flwr-run.log", help="where to stream the run's log (default flwr-run.log)")
    crun.set_defaults(func=_coordinator_run)

    from coordinator.console.cli import add_console_commands

    add_console_commands(sub)

    from node.twins.cli import add_twin_commands

    add_twin_commands(sub)

    bench = sub.add_parser("bench", help="run a benchmark; its last line is one JSON object")
    bench.add_argument("name", help="ledger, training, overhead or twin")
    bench.add_argument("--json", action="store_true", help="print only the JSON line")
    bench.add_argument("--seeds", type=int, help="training: number of seeds (default 5)")
    bench.add_argument("--patients", type=int, help="override the number of patients")
    bench.set_defaults(func=_bench)

    audit = sub.add_parser("audit", help="audit a study's anchored rounds against the chain")
    _chain_args(audit)
    audit.add_argument("--study", required=True, help="the study id (0x and 64 hex digits)")
    audit.add_argument("usage", nargs="+", help="usage logs exported by the nodes")
    audit.set_defaults(func=_audit)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("web3", "urllib3", "asyncio", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from coordinator.settings import SettingsError as CoordinatorSettingsError
    from node.importer import RecordFileError
    from node.settings import SettingsError as NodeSettingsError
    from node.vault import VaultError

    try:
        return args.func(args) or 0
    except (lg.LedgerError, RecordFileError, NodeSettingsError, CoordinatorSettingsError, VaultError) as exc:
        print(f"twinledger: {exc}", file=sys.stderr)
        return 2
    except (KeyError, ValueError) as exc:
        print(f"twinledger: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
