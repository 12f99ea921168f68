"""A hospital's commands of `twinledger`: its node, its patient portal, its IT console and the patient twins.

`add_node_commands(subparsers)` and `add_portal_commands(subparsers)` add the groups to the twinledger command
(`twinledger node --help` and `twinledger portal --help` list them, from the parsers' own help); the `twin`
commands are node/twins/cli.py's, the IT console's node/console/cli.py's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from contracts.cli import add_plaintext_key, add_rpc_url, gas_hint
from federation.backup import add_archive_commands
from federation.ids import StudyId

HOME_HELP = "the node's home directory"


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix: printed as one line, exit status 2."""
    from node.backup import BackupError
    from node.records import RecordFileError
    from node.settings import SettingsError
    from node.vault import VaultError

    return (BackupError, RecordFileError, SettingsError, VaultError)


def _settings(args):
    from node.settings import NodeSettings

    return NodeSettings.load(args.home)


def _node_init(args) -> int:
    from node import admin

    settings = admin.init_node(Path(args.home), hospital=args.hospital, rpc_url=args.rpc_url,
                               deployment_file=Path(args.deployment_file).resolve() if args.deployment_file else None,
                               database_url=args.database_url, plaintext_key=args.plaintext_key)
    if args.chain_ca_file:  # the CA of an https rpc-url, kept in node.toml
        settings = settings.model_copy(update={"chain_ca_file": Path(args.chain_ca_file).resolve()})
        settings.save()
    from node import node_keys

    address = admin.hospital_address(settings)
    keys = node_keys.ensure_node_keys(settings.home)
    print(f"node home {settings.home}; hospital account {address} "
          f"(ask the consortium operator to register it; {gas_hint(address)})")
    print(f"SuperNode key {keys.public_key} (once the operator registered the hospital: twinledger node record-key; "
          "without a node follower, give this public key to the operator: twinledger coordinator nodes admit):")
    print(keys.public_key.read_text().strip())
    return 0


def _hospital_ledger(args):
    """The node home's settings and the ledger as its hospital (keys/hospital.key)."""
    from contracts.ledger import Ledger

    settings = _settings(args)
    return settings, Ledger.from_settings(settings, key_file=settings.hospital_key_file, key_role="hospital")


def _node_record_key(args) -> int:
    from node.node_keys import record_node_key

    settings, ledger = _hospital_ledger(args)
    point = record_node_key(ledger, settings.home)
    print(f"SuperNode key of {ledger.address} on chain: 0x{point.hex()[:16]}… (the coordinator's node follower "
          "admits it)")
    return 0


def _node_rotate_node_key(args) -> int:
    from node.node_keys import rotate_node_keys

    settings, ledger = _hospital_ledger(args)
    point = rotate_node_keys(ledger, settings.home)
    print(f"new SuperNode key of {ledger.address} on chain: 0x{point.hex()[:16]}…; the old key is no longer "
          "admitted (the coordinator's node follower drops it): restart the node (twinledger node start)")
    return 0


def _node_rotate_hospital_key(args) -> int:
    from node.hospital_key import rotate_hospital_key

    settings, ledger = _hospital_ledger(args)
    signer = rotate_hospital_key(ledger, settings.hospital_key_file)
    print(f"hospital {ledger.address} now acts through {signer} ({settings.hospital_key_file}); the old key can do "
          "nothing for it: restart the node and its portal")
    return 0


def _node_import(args) -> int:
    from node import admin

    report = admin.import_records(_settings(args), Path(args.file), record_prefix=args.record_prefix, cohort=args.cohort)
    print(f"{report.source}: {report.summary()}; cohorts {report.cohorts}")
    for patient in report.patients:
        if patient.outcome in ("updated", "rejected"):
            print(f"  {patient.record_number} {patient.outcome}: {'; '.join(patient.reasons) or 'no reason given'}")
    return 0


def _node_accept(args) -> int:
    from contracts.ledger import Ledger

    study_id = StudyId.parse(args.study)
    settings = _settings(args)
    Ledger.from_settings(settings, key_file=settings.hospital_key_file).accept_study(study_id)
    print(f"accepted study {args.study}")
    return 0


def _node_start(args) -> int:
    from node import supernode

    settings = _settings(args)
    warm = not args.stock_supernode
    if args.insecure:
        security = ["--insecure"]
    elif args.root_certificates is None:
        raise ValueError("node start needs --root-certificates (the consortium's CA certificate, ca.pem) to check "
                         "the SuperLink; --insecure is for a development SuperLink only")
    else:
        security = supernode.security_options(settings.home, root_certificates=Path(args.root_certificates).resolve(),
                                              warm=warm)
    command = supernode.command(warm=warm)
    os.execve(
        command[0],
        [*command, *security, "--superlink", args.superlink, "--port", str(args.port),
         *(["--health-server-address", args.health_server_address] if args.health_server_address else []),
         "--node-config", f'node-home="{settings.home}"'],
        supernode.environment(Path(args.flwr_home)),
    )


def _node_export(args) -> int:
    from node import admin

    print(admin.export_usage(_settings(args), Path(args.out)))
    return 0


def _node_migrate(args) -> int:
    from sqlalchemy import create_engine

    from federation.migrations import current_revision, migrate
    from node.migrations import NODE_SCHEMA

    engine = create_engine(_settings(args).resolved_database_url)
    outcome = migrate(engine, NODE_SCHEMA)
    print(f"node database {engine.url.render_as_string(hide_password=True)}: {outcome} "
          f"(revision {current_revision(engine)})")
    return 0


def _node_backup(args) -> int:
    from node.backup import backup_home, backup_passphrase

    passphrase = backup_passphrase(Path(args.passphrase_file) if args.passphrase_file else None)
    out = backup_home(_settings(args), Path(args.out), passphrase=passphrase)
    print(f"node home {Path(args.home).resolve()} backed up, encrypted, to {out}")
    return 0


def _node_restore(args) -> int:
    from node.backup import backup_passphrase, restore_home

    passphrase = backup_passphrase(Path(args.passphrase_file) if args.passphrase_file else None)
    kept = restore_home(Path(args.archive), Path(args.home), passphrase=passphrase, force=args.force)
    print(f"node home {Path(args.home).resolve()} restored from {args.archive}"
          + (f"; the home it replaced is kept at {kept}" if kept else ""))
    return 0


def _ledger(settings):
    from contracts.ledger import Ledger

    return Ledger.from_settings(settings, key_file=settings.hospital_key_file)


def _node_enrol(args) -> int:
    from node import bulk

    if args.all == bool(args.patients):
        raise ValueError("name the patients (record numbers) to enrol, or --all for every imported patient")
    settings = _settings(args)
    addresses = bulk.read_consent_addresses(Path(args.addresses))
    outcomes = bulk.enrol(settings, _ledger(settings), addresses, None if args.all else args.patients)
    for outcome in outcomes:
        print(f"  {outcome.patient} {outcome.outcome}" + (f": {outcome.reason}" if outcome.reason else ""))
    if args.report:
        bulk.write_report(outcomes, Path(args.report), ("patient", "outcome", "reason"))
    print(f"enrolment: {bulk.summary(outcomes)}" + (f"; report {args.report}" if args.report else ""))
    return 1 if any(o.outcome == "failed" for o in outcomes) else 0


def _node_consent_import(args) -> int:
    from node import bulk, consent_import

    settings = _settings(args)
    path = Path(args.file)
    lines = consent_import.read_signed_consents(path)  # a malformed file stops here, before the chain is asked
    ledger = _ledger(settings)
    good, rejected = consent_import.check(lines, settings, ledger)
    outcomes = sorted(rejected + (consent_import.relay(good, settings, ledger) if good else []), key=lambda o: o.line)
    report = Path(args.report) if args.report else path.with_name(path.name + ".report.csv")
    bulk.write_report(outcomes, report, consent_import.REPORT_FIELDS)
    for outcome in outcomes:
        if outcome.outcome != "recorded":
            print(f"  line {outcome.line} ({outcome.patient}) {outcome.outcome}: {outcome.reason}")
    print(f"{path}: {bulk.summary(outcomes)}; per-patient report {report}")
    return 0 if all(o.outcome == "recorded" for o in outcomes) else 1


def _node_erase(args) -> int:
    import json

    from node.erase import erase_patient

    receipt = erase_patient(_settings(args), args.patient)
    print(json.dumps(receipt, indent=1))
    if receipt["kept"]:  # never silent: a use without consent stays in the log for the auditor
        print(f"twinledger: {len(receipt['kept'])} usage-log entries still name the patient (see 'kept')", file=sys.stderr)
    return 1 if receipt["kept"] else 0


def _portal_serve(args) -> int:
    from node.portal.admin import serve

    serve(Path(args.home), port=args.port, tls_certfile=args.tls_certfile, tls_keyfile=args.tls_keyfile,
          insecure_http=args.insecure_http)
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


def add_node_commands(subparsers) -> None:
    node = subparsers.add_parser("node", help="a hospital node").add_subparsers(dest="action", required=True)
    init = node.add_parser("init", help="create a node home with its keys")
    init.add_argument("--home", required=True, help=HOME_HELP + " (created if missing)")
    init.add_argument("--hospital", required=True, help="the hospital's name, as reported to the coordinator")
    add_rpc_url(init)
    init.add_argument("--deployment-file", help="the consortium's deployment.json (the node refuses every round without it)")
    init.add_argument("--database-url", default="", help="any SQLAlchemy URL; default SQLite in the home")
    add_plaintext_key(init, role="hospital")
    init.set_defaults(func=_node_init)
    imp = node.add_parser("import", help="import patient records (CSV or FHIR Bundle: heart disease, or twins' type 1 diabetes data)")
    imp.add_argument("--home", required=True, help=HOME_HELP)
    imp.add_argument("--record-prefix", help="prefix of generated record numbers (default: first three letters of the hospital)")
    imp.add_argument("--cohort", choices=("train", "test"),
                     help="twins' records only: every patient of the file in this cohort (default: a third test)")
    imp.add_argument("file", help="UCI Heart Disease file, CSV with a header row, twins' CSV, or FHIR Bundle (.json)")
    imp.set_defaults(func=_node_import)
    accept = node.add_parser("accept-study", help="accept a study with the hospital's account")
    accept.add_argument("--home", required=True, help=HOME_HELP)
    accept.add_argument("study", help="the study id (0x and 64 hex digits)")
    accept.set_defaults(func=_node_accept)
    record = node.add_parser("record-key", help="record the SuperNode's key on chain as the hospital (a transaction)")
    record.add_argument("--home", required=True, help=HOME_HELP)
    record.set_defaults(func=_node_record_key)
    rotate = node.add_parser("rotate-node-key", help="replace the SuperNode's key: a new one in the node home, "
                             "recorded on chain, the old one no longer admitted (a transaction)")
    rotate.add_argument("--home", required=True, help=HOME_HELP)
    rotate.set_defaults(func=_node_rotate_node_key)
    rotate_chain = node.add_parser("rotate-hospital-key", help="replace the hospital's chain key: a new keystore in "
                                   "the node home, recorded on chain; the old key can do nothing (transactions)")
    rotate_chain.add_argument("--home", required=True, help=HOME_HELP)
    rotate_chain.set_defaults(func=_node_rotate_hospital_key)
    start = node.add_parser("start", help="run the node's Flower SuperNode")
    start.add_argument("--home", required=True, help=HOME_HELP)
    start.add_argument("--superlink", default="127.0.0.1:8000",
                       help="the coordinator's SuperLink as hospitals reach it (its Fleet gateway), HOST:PORT "
                            "(default 127.0.0.1:8000)")
    start.add_argument("--root-certificates",
                       help="the consortium CA certificate (ca.pem) the SuperLink's certificate must chain to")
    start.add_argument("--insecure", action="store_true",
                       help="development only: plain HTTP and no node key (the SuperLink must run --insecure too)")
    start.add_argument("--port", type=int, default=9101, help="local port for the SuperNode's ClientApp processes (default 9101)")
    start.add_argument("--flwr-home", default=".flwr", help="Flower's home for this SuperNode (default .flwr)")
    start.add_argument("--stock-supernode", action="store_true",
                       help="Flower's flower-supernode as is (a fresh ClientApp process per message, 3 s idle poll; "
                            "no app gate: it runs the ClientApp a FAB names, so development and benchmarks only)")
    start.add_argument("--health-server-address", help="serve Flower's gRPC health service (no TLS) at HOST:PORT, "
                                                       "e.g. 127.0.0.1:9102, for a gRPC probe")
    start.set_defaults(func=_node_start)
    export = node.add_parser("export-usage", help="export the node's usage log for auditors")
    export.add_argument("--home", required=True, help=HOME_HELP)
    export.add_argument("--out", required=True, help="the JSON file to write")
    export.set_defaults(func=_node_export)
    migrate = node.add_parser("migrate", help="upgrade the node's database (node, portal and IT console tables) to "
                              "this version's schema; every node process also does it on start")
    migrate.add_argument("--home", required=True, help=HOME_HELP)
    migrate.set_defaults(func=_node_migrate)
    add_archive_commands(node, command="node", contents="node home (database, keys, settings)", home_help=HOME_HELP,
                         stop_first="the node, portal and console", backup=_node_backup, restore=_node_restore)
    _add_bulk_commands(node)
    from node.console.cli import add_node_console_commands

    add_node_console_commands(node)


def _add_bulk_commands(node) -> None:
    """Hospital IT's bulk work: enrol, consent import, erase (node/bulk.py, node/consent_import.py, node/erase.py)."""
    enrol = node.add_parser("enrol", help="enrol imported patients on chain with their consent addresses, in batches")
    enrol.add_argument("--home", required=True, help=HOME_HELP)
    enrol.add_argument("--addresses", required=True,
                       help="CSV with the header record_number,consent_address: each patient's own consent address")
    enrol.add_argument("--all", action="store_true", help="every imported patient")
    enrol.add_argument("--report", help="also write the per-patient report to this CSV file")
    enrol.add_argument("patients", nargs="*", metavar="PATIENT", help="record numbers to enrol")
    enrol.set_defaults(func=_node_enrol)
    consent = node.add_parser("consent", help="patients' signed consents").add_subparsers(dest="consent_action",
                                                                                          required=True)
    imp = consent.add_parser("import", help="check and relay consents signed elsewhere (JSON lines of EIP-712 "
                             "signatures; docs/node.md)")
    imp.add_argument("--home", required=True, help=HOME_HELP)
    imp.add_argument("--report", help="the per-patient report to write (default FILE.report.csv)")
    imp.add_argument("file", help="the signed consents, one JSON object a line")
    imp.set_defaults(func=_node_consent_import)
    erase = node.add_parser("erase", help="erase a patient (docs/privacy.md) and write a receipt in <home>/erasures")
    erase.add_argument("--home", required=True, help=HOME_HELP)
    erase.add_argument("patient", help="the patient's record number (or pseudonym)")
    erase.set_defaults(func=_node_erase)


def add_portal_commands(subparsers) -> None:
    from federation.web.serving import add_serving_arguments

    portal = subparsers.add_parser("portal", help="the hospital's patient portal").add_subparsers(dest="action", required=True)
    serve = portal.add_parser("serve", help="run the patient portal over HTTPS on 127.0.0.1 (or behind a TLS proxy)")
    serve.add_argument("--home", required=True, help=HOME_HELP)
    serve.add_argument("--port", type=int, default=8800, help="local port (default 8800)")
    add_serving_arguments(serve)
    serve.set_defaults(func=_portal_serve)
    token = portal.add_parser("staff-token", help="print the staff token (created in <home>/keys/staff.token)")
    token.add_argument("--home", required=True, help=HOME_HELP)
    token.set_defaults(func=_portal_staff_token)
    code = portal.add_parser("enrolment-code", help="issue a one-time enrolment code for a patient")
    code.add_argument("--home", required=True, help=HOME_HELP)
    code.add_argument("record_number", help="the patient's record number")
    code.set_defaults(func=_portal_code)
