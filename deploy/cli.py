"""`twinledger`: the command line for the demo and for running each part on its own.

    twinledger demo [--report PATH]                 the whole federation on this machine
    twinledger chain start|deploy                   a local chain; deploy the contracts
    twinledger study propose                        the operator proposes a study
    twinledger node init|import|accept-study|start|export-usage
    twinledger coordinator init|superlink|run
    twinledger audit                                check every anchored round against the chain
    twinledger bench NAME [--json]                  benchmarks (ledger)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from contracts import ledger as lg


def _demo(args) -> int:
    from deploy.demo import DemoOptions, run_demo

    options = DemoOptions(
        workdir=Path(args.workdir), report=Path(args.report) if args.report else None, rpc_url=args.rpc_url,
        rounds=args.rounds, epsilon_budget=args.epsilon, revoke_after_round=args.revoke_after_round,
        unreachable_chain_for=args.unreachable_chain_for or [], timeout_s=args.timeout_s,
    )
    report = run_demo(options)
    final = report["rounds"][-1] if report["rounds"] else {}
    print()
    print(f"Demo finished in {report['wall_seconds']} s: {len(report['rounds'])} rounds, "
          f"final accuracy {final.get('accuracy')}, audit violations {report['audit']['violations']}.")
    for hospital in report["hospitals"]:
        print(f"  {hospital['name']:<12} patients {hospital['patients']:>4}  consented {hospital['consented']}  "
              f"epsilon {hospital['epsilon_spent']:.2f} of {hospital['epsilon_budget']:g}")
    report_path = Path(args.report or Path(args.workdir) / "report.json").resolve()
    print(f"Report: {report_path}")
    print(f"Page:   {report_path.with_suffix('.html')}")
    return 0 if report["audit"]["violations"] == 0 else 1


def _chain_start(args) -> int:
    from deploy import processes

    service, url = processes.start_anvil(port=args.port, log_path=Path(args.log))
    print(f"anvil serving JSON-RPC at {url} (log {args.log}); Ctrl-C stops it")
    try:
        service.process.wait()
    except KeyboardInterrupt:
        service.stop()
    return 0


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
    print(f"node home {settings.home}; hospital account {admin.hospital_address(settings)} "
          "(ask the consortium operator to register it, and fund it for gas)")
    return 0


def _node_settings(args):
    from node.settings import NodeSettings

    return NodeSettings.load(args.home)


def _node_import(args) -> int:
    from node import admin

    report = admin.import_records(_node_settings(args), Path(args.file), record_prefix=args.record_prefix)
    print(f"imported {report.imported} patients from {report.source} ({report.cohorts}); "
          f"{report.already_present} already present")
    return 0


def _node_accept(args) -> int:
    from node import admin

    admin.open_ledger(_node_settings(args)).accept_study(bytes.fromhex(args.study.removeprefix("0x")))
    print(f"accepted study {args.study}")
    return 0


def _node_start(args) -> int:
    from deploy import processes

    settings = _node_settings(args)
    os.execve(
        str(processes.VENV_BIN / "flower-supernode"),
        ["flower-supernode", "--insecure", "--superlink", args.superlink, "--port", str(args.port),
         "--node-config", f'node-home="{settings.home}"'],
        processes.flower_env(Path(args.flwr_home)),
    )


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

    print(f"coordinator home {settings.home}; account {Account.from_key(lg.load_key(settings.key_file)).address} "
          "(the operator grants it the coordinator role: twinledger study grant-coordinator)")
    return 0


def _grant_coordinator(args) -> int:
    _operator(args).grant_coordinator(args.account)
    print(f"granted the coordinator role to {args.account}")
    return 0


def _coordinator_superlink(args) -> int:
    from deploy import processes

    os.execve(
        str(processes.VENV_BIN / "flower-superlink"),
        ["flower-superlink", "--insecure", "--database", str(Path(args.database).resolve()), "--port", str(args.port),
         "--disable-runtime-dependency-installation"],
        processes.flower_env(Path(args.flwr_home)),
    )


def _coordinator_run(args) -> int:
    from deploy import processes

    flwr_home = Path(args.flwr_home).resolve()  # `flwr run` runs in the project directory, not here
    host, port = args.superlink.rsplit(":", 1)
    processes.write_flower_federation(flwr_home, name="consortium", superlink_port=int(port))
    run = processes.flwr_run(
        federation="consortium",
        run_config={"study-id": args.study, "coordinator-home": str(Path(args.home).resolve()),
                    "num-rounds": args.rounds, "run-name": args.run_name, "min-nodes": args.min_nodes},
        flwr_home=flwr_home, log_path=Path(args.log),
    )
    print(f"run submitted; streaming its log to {args.log}")
    return run.process.wait()


def _audit(args) -> int:
    from contracts.audit import audit_study, load_usage_logs

    auditor = lg.Ledger(lg.connect(args.rpc_url), lg.Deployment.load(Path(args.deployment_file)))
    result = audit_study(auditor, bytes.fromhex(args.study.removeprefix("0x")), load_usage_logs([Path(p) for p in args.usage]))
    print(json.dumps(result.as_dict(), indent=1))
    return 0 if result.violations == 0 else 1


def _bench(args) -> int:
    from deploy import bench

    kwargs = {"patients": args.patients} if args.patients else {}
    return bench.run(args.name, as_json=args.json, **kwargs)


def _chain_args(parser, *, operator=False) -> None:
    parser.add_argument("--rpc-url", default=os.environ.get("TWINLEDGER_RPC_URL", "http://127.0.0.1:8545"))
    parser.add_argument("--deployment-file", default=os.environ.get("TWINLEDGER_DEPLOYMENT_FILE", "deployment.json"))
    if operator:
        parser.add_argument("--operator-key", default="operator.key", help="hex private key file of the operator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twinledger", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a demo federation of four hospitals on this machine")
    demo.add_argument("--workdir", default="demo-run", help="where the demo keeps its chain, nodes and logs")
    demo.add_argument("--report", help="where to write the JSON report (an HTML page goes next to it)")
    demo.add_argument("--rpc-url", help="use this running chain instead of starting anvil")
    demo.add_argument("--rounds", type=int, default=5)
    demo.add_argument("--epsilon", type=float, default=3.0, help="privacy budget per hospital (delta 1e-5)")
    demo.add_argument("--revoke-after-round", type=int, default=2)
    demo.add_argument("--unreachable-chain-for", action="append", metavar="HOSPITAL",
                      help="fault injection: this hospital's node gets a chain URL that does not answer")
    demo.add_argument("--timeout-s", type=float, default=1800.0)
    demo.set_defaults(func=_demo)

    chain = sub.add_parser("chain", help="a local chain and the contracts").add_subparsers(dest="action", required=True)
    start = chain.add_parser("start", help="run anvil on loopback")
    start.add_argument("--port", type=int, default=8545)
    start.add_argument("--log", default="anvil.log")
    start.set_defaults(func=_chain_start)
    deploy = chain.add_parser("deploy", help="compile and deploy the contracts")
    deploy.add_argument("--rpc-url", default="http://127.0.0.1:8545")
    deploy.add_argument("--operator-key", default="operator.key", help="created if missing")
    deploy.add_argument("--fund-from-dev-account", action="store_true", help="fund a new operator key (dev chains)")
    deploy.add_argument("--out", default="deployment.json")
    deploy.set_defaults(func=_chain_deploy)

    study = sub.add_parser("study", help="consortium operator actions").add_subparsers(dest="action", required=True)
    propose = study.add_parser("propose", help="propose a study; prints its id")
    _chain_args(propose, operator=True)
    propose.add_argument("--purpose", default="HRESCH")
    propose.add_argument("--task", default="heart-disease/v1")
    propose.add_argument("--epsilon", type=float, default=3.0)
    propose.add_argument("--delta-exponent", type=int, default=5)
    propose.add_argument("--rounds", type=int, default=5)
    propose.add_argument("--days", type=int, default=30)
    propose.set_defaults(func=_study_propose)
    register = study.add_parser("register-hospital", help="register a hospital's account")
    _chain_args(register, operator=True)
    register.add_argument("account")
    register.set_defaults(func=_hospital_register)
    grant = study.add_parser("grant-coordinator", help="let an account anchor rounds")
    _chain_args(grant, operator=True)
    grant.add_argument("account")
    grant.set_defaults(func=_grant_coordinator)

    node = sub.add_parser("node", help="a hospital node").add_subparsers(dest="action", required=True)
    init = node.add_parser("init", help="create a node home with its keys")
    init.add_argument("--home", required=True)
    init.add_argument("--hospital", required=True)
    init.add_argument("--rpc-url", default="http://127.0.0.1:8545")
    init.add_argument("--deployment-file")
    init.add_argument("--database-url", default="", help="any SQLAlchemy URL; default SQLite in the home")
    init.set_defaults(func=_node_init)
    imp = node.add_parser("import", help="import patient records (CSV)")
    imp.add_argument("--home", required=True)
    imp.add_argument("--record-prefix")
    imp.add_argument("file")
    imp.set_defaults(func=_node_import)
    accept = node.add_parser("accept-study", help="accept a study with the hospital's account")
    accept.add_argument("--home", required=True)
    accept.add_argument("study")
    accept.set_defaults(func=_node_accept)
    nstart = node.add_parser("start", help="run the node's Flower SuperNode")
    nstart.add_argument("--home", required=True)
    nstart.add_argument("--superlink", default="127.0.0.1:8000")
    nstart.add_argument("--port", type=int, default=9101)
    nstart.add_argument("--flwr-home", default=".flwr")
    nstart.set_defaults(func=_node_start)
    export = node.add_parser("export-usage", help="export the node's usage log for auditors")
    export.add_argument("--home", required=True)
    export.add_argument("--out", required=True)
    export.set_defaults(func=_node_export)

    coord = sub.add_parser("coordinator", help="the consortium's coordinator").add_subparsers(dest="action", required=True)
    cinit = coord.add_parser("init", help="create a coordinator home with its key")
    cinit.add_argument("--home", required=True)
    cinit.add_argument("--rpc-url", default="http://127.0.0.1:8545")
    cinit.add_argument("--deployment-file", required=True)
    cinit.add_argument("--min-nodes", type=int, default=1)
    cinit.set_defaults(func=_coordinator_init)
    link = coord.add_parser("superlink", help="run the Flower SuperLink")
    link.add_argument("--database", default="superlink-state.db")
    link.add_argument("--port", type=int, default=8000)
    link.add_argument("--flwr-home", default=".flwr")
    link.set_defaults(func=_coordinator_superlink)
    crun = coord.add_parser("run", help="launch a study's training run on the SuperLink")
    crun.add_argument("--home", required=True)
    crun.add_argument("--study", required=True)
    crun.add_argument("--superlink", default="127.0.0.1:8000")
    crun.add_argument("--rounds", type=int, default=5)
    crun.add_argument("--min-nodes", type=int, default=1)
    crun.add_argument("--run-name", default="run")
    crun.add_argument("--flwr-home", default=".flwr")
    crun.add_argument("--log", default="flwr-run.log")
    crun.set_defaults(func=_coordinator_run)

    bench = sub.add_parser("bench", help="run a benchmark; its last line is one JSON object")
    bench.add_argument("name", help="ledger")
    bench.add_argument("--json", action="store_true", help="print only the JSON line")
    bench.add_argument("--patients", type=int, help="override the number of patients")
    bench.set_defaults(func=_bench)

    audit = sub.add_parser("audit", help="audit a study's anchored rounds against the chain")
    _chain_args(audit)
    audit.add_argument("--study", required=True)
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
