"""The coordinator's commands of `twinledger`: its home, the Flower SuperLink, a study's run, the operator console.

`add_coordinator_commands(subparsers)` adds the `coordinator` group (the operator console's: coordinator/console/
cli.py). `coordinator run` submits the packaged Flower app with `flwr run` and reads the run's report.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from contracts import ledger as lg
from contracts.cli import add_plaintext_key, add_rpc_url, gas_hint
from coordinator import home_backup, processes, run_outcome
from federation.defaults import TRAINING
from federation.ids import StudyId

# Training parameters that `coordinator run` passes on only when given (else the Flower app's run config applies,
# which equals federation.defaults.TRAINING).
TRAINING_OPTIONS = {"rounds": "num-rounds", "local_epochs": "local-epochs", "learning_rate": "learning-rate",
                    "batch_size": "batch-size", "max_grad_norm": "max-grad-norm", "strategy": "strategy",
                    "server_learning_rate": "server-learning-rate"}


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix: printed as one line, exit status 2."""
    from coordinator.ca import CAError
    from coordinator.settings import SettingsError

    return (SettingsError, CAError, processes.ProcessError)


def _coordinator_init(args) -> int:
    from eth_account import Account

    from coordinator.settings import CoordinatorSettings

    from contracts.keystore import create_key_file

    settings = CoordinatorSettings(home=Path(args.home).resolve(), rpc_url=args.rpc_url,
                                   deployment_file=Path(args.deployment_file).resolve(), min_nodes=args.min_nodes,
                                   chain_ca_file=Path(args.chain_ca_file).resolve() if args.chain_ca_file else None)
    if not settings.key_file.exists():  # first: without a passphrase nothing is written
        create_key_file(settings.key_file, role="coordinator", plaintext=args.plaintext_key)
    settings.save()
    address = Account.from_key(lg.load_key(settings.key_file)).address
    print(f"coordinator home {settings.home}; account {address} "
          f"(the operator grants it the coordinator role: twinledger study grant-coordinator; {gas_hint(address)})")
    return 0


def _coordinator_superlink(args) -> int:
    """The SuperLink (and, unless --insecure, its Fleet gateway) until Ctrl-C or SIGTERM."""
    import signal

    link = processes.start_superlink(
        port=args.port, state_dir=Path(args.state_dir).resolve(), flwr_home=Path(args.flwr_home).resolve(),
        host=args.host, ca_dir=Path(args.ca_dir).resolve() if args.ca_dir else None,
        control_port=args.control_port, insecure=args.insecure, health_address=args.health_server_address,
        follow_home=Path(args.home).resolve() if args.home and not args.insecure else None,
    )
    if link.insecure:
        print(f"INSECURE development SuperLink on {link.fleet_address}: plain HTTP, any node admitted, run "
              "submission open to whoever reaches the port", flush=True)
    else:
        print(f"SuperLink: hospitals dial the Fleet gateway at {args.host}:{args.port}; Control and Runtime APIs on "
              f"{link.control_address} only; TLS from CA {link.root_certificates}; node keys "
              + ("follow the chain (the hospitals' keys recorded with their records)" if link.follower else
                 "admitted with twinledger coordinator nodes admit|sync|follow") + ". Ctrl-C or SIGTERM stops it",
              flush=True)

    def _terminated(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        while link.alive() and link.helpers_alive:
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        link.stop()
    print(f"twinledger: the SuperLink, its gateway or its node follower stopped; see {link.log_path.parent}",
          file=sys.stderr)
    return 1


def _ca(args):
    from coordinator import ca as cax

    return cax, cax.load_ca(Path(args.ca_dir))


def _ca_init(args) -> int:
    from coordinator import ca as cax

    authority = cax.create_ca(Path(args.ca_dir), name=args.name)
    print(f"CA created in {authority.directory}; give {authority.cert_path} to every party (its key stays here)")
    return 0


def _ca_issue(args, kind: str) -> int:
    cax, authority = _ca(args)
    out = Path(args.out)
    if kind == "server":
        issued = cax.issue_server_certificate(authority, out, args.service, dns_names=args.dns or [],
                                              ip_addresses=args.ip or [], valid_days=args.days)
    else:
        issued = cax.issue_client_certificate(authority, out, args.holder, valid_days=args.days)
    print(f"{issued.cert_path} (key {issued.key_path}); serial {issued.serial}; "
          f"valid until {issued.not_after:%Y-%m-%d}")
    return 0


def _ca_revoke(args) -> int:
    cax, authority = _ca(args)
    cax.revoke(authority, int(args.serial, 0))
    print(f"revoked {args.serial}; CRL {cax.write_crl(authority)} (replace the certificate where it was used)")
    return 0


def _ca_crl(args) -> int:
    cax, authority = _ca(args)
    print(cax.write_crl(authority, next_update_days=args.next_update_days))
    return 0


def _control_target(args) -> tuple[str, Path]:
    """The SuperLink's Control API address and CA: --superlink is its loopback control address (or, for a link
    started on this machine, its hospitals' port), trusting --root-certificates (or that link's CA)."""
    host, port = processes.superlink_address(args.superlink)
    address, ca_cert = f"{host}:{port}", Path(args.root_certificates) if args.root_certificates else None
    link = processes.find_link(port) if processes.reachable_host(host) in processes.LOOPBACK else None
    if ca_cert is None:
        if link is None or link.insecure:
            raise processes.ProcessError("give --root-certificates (the consortium CA's ca.pem)")
        address, ca_cert = link.control_address, link.root_certificates
    elif link is not None:
        address = link.control_address
    return address, ca_cert


@contextmanager
def _control_admin(args):
    """The SuperLink's Control API client (`_control_target`)."""
    from coordinator import admission

    address, ca_cert = _control_target(args)
    import httpx

    admin = admission.ControlAdmin(address, ca_cert)
    try:
        yield admin
    except httpx.HTTPError as exc:
        raise processes.ProcessError(f"the SuperLink's Control API at {address} did not answer: {exc} (run this "
                                     "on the coordinator's machine; --superlink is its control address)") from None
    finally:
        admin.close()


def _nodes_admit(args) -> int:
    from coordinator import admission

    single = args.name if args.name and len(args.public_keys) == 1 else None
    keys = {single or Path(path).stem: admission.pem_from_key_file(Path(path)) for path in args.public_keys}
    with _control_admin(args) as admin:
        for name, node_id in admission.admit(admin, keys).items():
            print(f"{name}: node id {node_id}")
    return 0


def _nodes_sync(args) -> int:
    from coordinator import admission

    wanted = {}
    for item in args.key or []:
        account, sep, path = item.partition("=")
        if not sep or not account or not path:
            raise ValueError(f"--key takes ACCOUNT=PUBLIC_KEY_FILE, got {item!r}")
        wanted[account] = admission.chain_key_from_pem(admission.pem_from_key_file(Path(path)))
    with _control_admin(args) as admin:
        report = admission.sync(admin, wanted)
    print(f"registered {report.registered or '{}'}; unregistered node ids {report.unregistered}; kept {report.kept}")
    return 0


def _nodes_follow(args) -> int:
    """Keep the admitted keys equal to the chain's active hospitals' node keys until Ctrl-C."""
    from coordinator import node_follower

    address, ca_cert = _control_target(args)
    try:
        node_follower.follow(home=Path(args.home).resolve(), control=address, ca_cert=ca_cert, poll_s=args.poll_s)
    except KeyboardInterrupt:
        pass
    return 0


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
    processes.write_flower_federation(
        flwr_home, name="consortium", superlink_port=port, host=host,
        root_certificates=Path(args.root_certificates).resolve() if args.root_certificates else None,
        insecure=True if args.insecure else None)
    started = time.time()
    run = processes.flwr_run(federation="consortium", run_config=run_config, flwr_home=flwr_home, log_path=Path(args.log))
    print(f"run submitted to {host}:{port}; streaming its log to {args.log}", flush=True)
    if settings is None:
        code = run.process.wait()
        print(f"the report is on the coordinator's machine: {home}/runs/{args.run_name or 'run-<Flower run id>'}/report.json")
        return code
    code = run_outcome.wait_for_flwr_run(run.process, settings.runs_dir, args.run_name, started=started)
    return run_outcome.check_report(settings.runs_dir, args.run_name, started=started, log=args.log, flwr_code=code)


def add_coordinator_commands(subparsers) -> None:
    coord = subparsers.add_parser("coordinator", help="the consortium's coordinator").add_subparsers(dest="action",
                                                                                                    required=True)
    init = coord.add_parser("init", help="create a coordinator home with its key")
    init.add_argument("--home", required=True, help="the coordinator's home directory (created if missing)")
    add_rpc_url(init)
    init.add_argument("--deployment-file", required=True, help="the consortium's deployment.json")
    init.add_argument("--min-nodes", type=int, default=1, help="SuperNodes a run waits for (default 1)")
    add_plaintext_key(init, role="coordinator")
    init.set_defaults(func=_coordinator_init)
    link = coord.add_parser("superlink", help="run the Flower SuperLink: TLS, SuperNode authentication, and the "
                                              "Fleet-only gateway hospitals dial (Ctrl-C or SIGTERM stops it)")
    link.add_argument("--host", default="127.0.0.1",
                      help="address of the hospitals' Fleet gateway (default 127.0.0.1; 0.0.0.0 for every interface)")
    link.add_argument("--port", type=int, default=8000, help="port of the hospitals' Fleet gateway (default 8000)")
    link.add_argument("--control-port", type=int, default=9093,
                      help="the SuperLink's own port on 127.0.0.1: its Control and Runtime APIs, for this machine's "
                           "processes only (default 9093)")
    link.add_argument("--state-dir", default="superlink-state",
                      help="the SuperLink's state, TLS certificates and logs (default superlink-state)")
    link.add_argument("--ca-dir", help="the consortium CA (twinledger coordinator ca init) that issues the link's "
                                       "certificates (default: a development CA in the state directory)")
    link.add_argument("--flwr-home", default=".flwr", help="Flower's home for the SuperLink (default .flwr)")
    link.add_argument("--home", help="the coordinator's home: with it the admitted node keys follow the chain "
                                     "(each active hospital's key on chain; suspended hospitals shut out)")
    link.add_argument("--insecure", action="store_true",
                      help="development only: plain HTTP on --host:--port, any node admitted, no gateway")
    link.add_argument("--health-server-address", help="serve Flower's gRPC health service (no TLS) at HOST:PORT, "
                                                      "e.g. 127.0.0.1:9098, for a gRPC probe")
    link.set_defaults(func=_coordinator_superlink)
    _add_ca_commands(coord)
    _add_nodes_commands(coord)
    home_backup.add_backup_commands(coord, home_backup.COORDINATOR_HOME, home_help="the coordinator's home directory")
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
    run.add_argument("--root-certificates",
                     help="the consortium CA certificate (default: that of the SuperLink started on this machine "
                          "with twinledger coordinator superlink)")
    run.add_argument("--insecure", action="store_true", help="development only: a SuperLink started --insecure")
    run.add_argument("--log", default="flwr-run.log", help="where to stream the run's log (default flwr-run.log)")
    run.set_defaults(func=_coordinator_run)


def _add_ca_commands(coord) -> None:
    ca = coord.add_parser("ca", help="the consortium's certificate authority").add_subparsers(dest="ca_action",
                                                                                             required=True)
    ca_dir_help = "the CA's directory, readable by the operator only (default ca)"
    init = ca.add_parser("init", help="create the CA (an EC P-256 key and a self-signed certificate)")
    init.add_argument("--ca-dir", default="ca", help=ca_dir_help)
    init.add_argument("--name", default="TwinLedger consortium CA", help="the CA's common name")
    init.set_defaults(func=_ca_init)
    server = ca.add_parser("issue-server", help="issue a TLS server certificate (SuperLink, gateway, web app, RPC proxy)")
    server.add_argument("service", help="the service's name: the files are OUT/SERVICE.pem and OUT/SERVICE.key")
    server.add_argument("--ca-dir", default="ca", help=ca_dir_help)
    server.add_argument("--out", default="tls", help="where to write the certificate and key (default tls)")
    server.add_argument("--dns", action="append", help="a DNS name clients dial (repeat)")
    server.add_argument("--ip", action="append", help="an IP address clients dial (repeat; 127.0.0.1 for loopback)")
    server.add_argument("--days", type=int, default=30, help="validity in days (default 30; re-issue to rotate)")
    server.set_defaults(func=lambda args: _ca_issue(args, "server"))
    client = ca.add_parser("issue-client", help="issue a TLS client certificate for a mutual-TLS proxy")
    client.add_argument("holder", help="who holds it (a hospital id): OUT/HOLDER.pem and OUT/HOLDER.key")
    client.add_argument("--ca-dir", default="ca", help=ca_dir_help)
    client.add_argument("--out", default="tls", help="where to write the certificate and key (default tls)")
    client.add_argument("--days", type=int, default=30, help="validity in days (default 30)")
    client.set_defaults(func=lambda args: _ca_issue(args, "client"))
    revoke = ca.add_parser("revoke", help="revoke a certificate by serial number and re-write the CRL")
    revoke.add_argument("serial", help="the serial number printed at issue (decimal, or 0x hex)")
    revoke.add_argument("--ca-dir", default="ca", help=ca_dir_help)
    revoke.set_defaults(func=_ca_revoke)
    crl = ca.add_parser("crl", help="re-write the certificate revocation list (do it before it expires)")
    crl.add_argument("--ca-dir", default="ca", help=ca_dir_help)
    crl.add_argument("--next-update-days", type=int, default=7, help="the CRL's validity in days (default 7)")
    crl.set_defaults(func=_ca_crl)


def _add_control_options(parser) -> None:
    parser.add_argument("--superlink", default="127.0.0.1:9093",
                        help="the SuperLink's Control API on this machine, HOST:PORT (default 127.0.0.1:9093)")
    parser.add_argument("--root-certificates",
                        help="the consortium CA certificate (default: the CA of the SuperLink started on this machine)")


def _add_nodes_commands(coord) -> None:
    nodes = coord.add_parser("nodes", help="which SuperNode keys the SuperLink admits").add_subparsers(
        dest="nodes_action", required=True)
    admit = nodes.add_parser("admit", help="admit SuperNode public keys (OpenSSH .pub files from twinledger node init)")
    admit.add_argument("public_keys", nargs="+", help="public key files (supernode_auth.pub)")
    admit.add_argument("--name", help="the node's name when one key is given (default: the file's name)")
    _add_control_options(admit)
    admit.set_defaults(func=_nodes_admit)
    sync = nodes.add_parser("sync", help="make the admitted keys exactly these hospitals' (every other key is "
                                         "unregistered, its SuperNode shut out)")
    sync.add_argument("--key", action="append", metavar="ACCOUNT=PUBLIC_KEY_FILE",
                      help="an active hospital's account and its SuperNode public key (repeat; none: admit no one)")
    _add_control_options(sync)
    sync.set_defaults(func=_nodes_sync)
    follow = nodes.add_parser("follow", help="keep the admitted keys equal to the active hospitals' node keys on "
                                             "chain, polling it (Ctrl-C stops it)")
    follow.add_argument("--home", required=True, help="the coordinator's home (the chain it reads)")
    follow.add_argument("--poll-s", type=float, default=2.0, help="seconds between syncs (default 2)")
    _add_control_options(follow)
    follow.set_defaults(func=_nodes_follow)
