"""`twinledger`: the command line for the demo and for running each part on its own.

`twinledger --help` (and `twinledger GROUP --help`) lists every command with its one-line help, generated from
the parsers below (`command_lines`), so the list cannot drift from the commands.
"""

# Each side owns its commands: contracts/cli.py (chain, study, audit), node/cli.py (node, portal; the twins'
# node/twins/cli.py, the IT console's node/console/cli.py), coordinator/cli.py (coordinator; the operator
# console's coordinator/console/cli.py). This module assembles them and adds what starts a whole deployment on
# one machine: the demo, the benchmarks, and `chain start` (contracts/devchain/cli.py) with the terminator's
# certificate from the consortium CA (deploy/processes.py `start_chain_gateway`).

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from contracts import cli as contracts_cli
from contracts.devchain.cli import add_chain_start
from coordinator import cli as coordinator_cli
from federation.logs import setup_logging
from node import cli as node_cli


def _hospital_round(value: str) -> tuple[str, int]:
    hospital, _, round_number = value.partition(":")
    if not hospital or not round_number.isdigit():
        raise ValueError(f"--stop-node-after-round takes HOSPITAL:ROUND, got {value!r}")
    return hospital, int(round_number)


def _demo(args) -> int:
    """`twinledger demo` and `twinledger study run`: one code path (deploy/demo.py run_demo)."""
    from deploy.demo import DemoOptions, run_demo

    options = DemoOptions(
        task_id=args.task, data=args.data and Path(args.data), consent_file=args.consent and Path(args.consent),
        workdir=Path(args.workdir), report=Path(args.report) if args.report else None, rpc_url=args.rpc_url,
        rounds=args.rounds, epsilon_budget=args.epsilon, revoke_after_round=args.revoke_after_round,
        unreachable_chain_for=args.unreachable_chain_for or [], timeout_s=args.timeout_s,
        stop_node_after_round=dict(_hospital_round(v) for v in args.stop_node_after_round or []),
    )
    options.serve_web = args.serve == "always" or (args.serve == "auto" and sys.stdin.isatty())
    options.on_report = _print_demo_summary
    report = run_demo(options)
    return 0 if report.audit["violations"] == 0 else 1


def _print_demo_summary(report, report_path: Path) -> None:
    """The demo's RunReport (coordinator/report.py) with its additions (`audit`, `wall_seconds`)."""
    metric = ((report.study and report.study.metric) or {}).get("name", "accuracy")
    value = report.rounds[-1].value(metric) if report.rounds else None
    print(f"\nDemo finished in {report.wall_seconds} s: {len(report.rounds)} rounds, "
          f"final {metric} {value} (the nodes' noisy DP release), audit violations {report.audit['violations']}.")
    for hospital in report.hospitals:
        spent = "inf" if hospital.epsilon_spent is None else f"{hospital.epsilon_spent:.2f}"
        print(f"  {hospital.name:<12} patients {hospital.patients:>4}  consented {hospital.consented}  "
              f"epsilon {spent} of {hospital.epsilon_budget:g}")
    print(f"Report: {report_path}")
    print(f"Page:   {report_path.with_suffix('.html')}", flush=True)


def _start_chain_gateway(**options):
    from deploy.processes import start_chain_gateway

    return start_chain_gateway(**options)


BENCHMARKS_PACKAGE = "twinledger_benchmarks"


def _our_benchmarks():
    """This project's benchmarks/, as the package `twinledger_benchmarks`: Opacus 1.6 installs a top-level
    package of its own named `benchmarks`. A wheel (and an install of the checkout) maps the folder to that name
    (setup.py); a checkout that was not installed since has the folder beside deploy/, loaded under that name."""
    import importlib.util

    try:
        return importlib.import_module(BENCHMARKS_PACKAGE)
    except ImportError:
        root = Path(__file__).resolve().parent.parent / "benchmarks"
        spec = importlib.util.spec_from_file_location(BENCHMARKS_PACKAGE, root / "__init__.py",
                                                      submodule_search_locations=[str(root)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[BENCHMARKS_PACKAGE] = module
        spec.loader.exec_module(module)
        return module


def _bench(args) -> int:
    benchmarks = _our_benchmarks()
    kwargs = {"patients": args.patients} if args.patients else {}
    if args.seeds:
        if args.name != "training":
            raise ValueError("--seeds applies to the training benchmark only")
        kwargs["seeds"] = args.seeds
    return benchmarks.run(args.name, as_json=args.json, **kwargs)


def _add_demo_command(sub) -> None:
    demo = sub.add_parser("demo", help="run a demo federation of four hospitals on this machine")
    demo.set_defaults(func=_demo, task="heart-disease/v1", data=None, consent=None)
    _add_run_options(demo)


def _add_study_run_command(study) -> None:
    run = study.add_parser("run", help="run a study of a task on this machine: chain, a node per data file, consent, "
                                       "the federation, the audit and the report (the demo's code path)")
    run.add_argument("--task", required=True, help="federated task id, e.g. heart-disease/v1")
    run.add_argument("--data", help="one records file per hospital, named by the hospital, and consent.csv "
                                    "(hospital,record_number,consent); default: the task's demo data")
    run.add_argument("--consent", help="the consent file, if not DIR/consent.csv")
    run.set_defaults(func=_demo, serve="never")
    _add_run_options(run, demo_only=False)


def _add_run_options(demo, *, demo_only: bool = True) -> None:
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
    if demo_only:
        demo.add_argument("--serve", choices=("auto", "always", "never"), default="auto",
                          help="after the run, serve the patient portal, the hospital IT console and the operator "
                               "console and print their addresses, until Ctrl-C (auto: only when run from a terminal)")


def _add_bench_command(sub) -> None:
    bench = sub.add_parser("bench", help="run a benchmark; its last line is one JSON object")
    bench.add_argument("name", help="ledger, training, overhead or twin")
    bench.add_argument("--json", action="store_true", help="print only the JSON line")
    bench.add_argument("--seeds", type=int, help="training: number of seeds (default 5)")
    bench.add_argument("--patients", type=int, help="override the number of patients")
    bench.set_defaults(func=_bench)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """A group's commands: name -> (parser, one-line help); empty for a command that has none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return {name: (child, helps.get(name, "")) for name, child in action.choices.items()}
    return {}


def command_lines(parser: argparse.ArgumentParser, words: tuple[str, ...] = ("twinledger",),
                  help_text: str = "") -> list[tuple[str, str]]:
    """Every command below `parser` with its positional arguments, and its one-line help."""
    children = _subcommands(parser)
    if not children:
        positionals = [(a.metavar or a.dest).upper() for a in parser._actions
                       if not a.option_strings and not isinstance(a, argparse._HelpAction)]
        return [(" ".join((*words, *positionals)), help_text)]
    return [line for name, (child, text) in children.items() for line in command_lines(child, (*words, name), text)]


def _list_commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ("twinledger",)) -> None:
    """Put the list of commands under each group's --help."""
    children = _subcommands(parser)
    if children:
        lines = command_lines(parser, words)
        width = max(len(command) for command, _ in lines) + 2
        parser.epilog = "commands:\n" + "\n".join(f"  {command:<{width}}{text}" for command, text in lines)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        for name, (child, _) in children.items():
            _list_commands(child, (*words, name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twinledger", description="TwinLedger: consent-ledger federated learning "
                                     "for hospitals (a node each), a coordinator and consent contracts on a chain.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo_command(sub)
    contracts_cli.add_chain_commands(sub, add_start=partial(add_chain_start, start_gateway=_start_chain_gateway))
    _add_study_run_command(contracts_cli.add_study_commands(sub))
    node_cli.add_node_commands(sub)
    node_cli.add_portal_commands(sub)
    coordinator_cli.add_coordinator_commands(sub)
    from coordinator.console.cli import add_console_commands
    from node.twins.cli import add_twin_commands

    add_console_commands(sub)
    add_twin_commands(sub)
    _add_bench_command(sub)
    contracts_cli.add_audit_command(sub)
    _list_commands(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose)  # TWINLEDGER_LOG_FORMAT=json for JSON lines (federation/logs.py)
    user_errors = contracts_cli.user_errors() + node_cli.user_errors() + coordinator_cli.user_errors()
    try:
        return args.func(args) or 0
    except user_errors as exc:
        print(f"twinledger: {exc}", file=sys.stderr)
        return 2
    except (KeyError, ValueError) as exc:
        print(f"twinledger: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
