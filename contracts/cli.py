"""The chain's commands of `twinledger`: deploy and fund (`chain`), the operator's `study` actions, `audit`.

`add_chain_commands(subparsers, add_start=...)` adds the `chain` group (deploy/cli.py adds `chain start`,
contracts/devchain/cli.py, which starts anvil), `add_study_commands` and `add_audit_command` the operator's
and the auditor's (`twinledger chain --help`, `twinledger study --help` list them). The options every chain client shares
(`add_rpc_url`, `add_chain_options`) and `gas_hint` are used by the node's and the coordinator's commands too.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from contracts import keystore
from contracts import ledger as lg
from federation.app_digest import packaged_app_digest
from federation.ids import StudyId
from federation.settings import DEFAULT_RPC_URL


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix: printed as one line, exit status 2."""
    return (lg.LedgerError, keystore.KeystoreError)


def gas_hint(address: str) -> str:
    return f"it needs ether for gas: on a dev chain, twinledger chain fund {address}"


def account_address(text: str) -> str:
    from eth_utils import is_address, to_checksum_address

    if not is_address(text):
        raise ValueError(f"not an account address (0x and 40 hex digits): {text!r}")
    return to_checksum_address(text)


def add_rpc_url(parser) -> None:
    parser.add_argument("--rpc-url", default=os.environ.get("TWINLEDGER_RPC_URL", DEFAULT_RPC_URL),
                        help=f"the chain's JSON-RPC URL (default $TWINLEDGER_RPC_URL, else {DEFAULT_RPC_URL}); "
                             "https, or plain http to loopback only")
    parser.add_argument("--chain-ca-file", default=os.environ.get("TWINLEDGER_CHAIN_CA_FILE") or None,
                        help="the CA certificate an https --rpc-url's certificate chains to (the consortium CA's "
                             "ca.pem; default $TWINLEDGER_CHAIN_CA_FILE, else the system's CAs)")


def connect(args):
    """The chain named by --rpc-url, trusting --chain-ca-file."""
    return lg.connect(args.rpc_url, ca_file=args.chain_ca_file)


def add_chain_options(parser, *, operator: bool = False) -> None:
    add_rpc_url(parser)
    parser.add_argument("--deployment-file", default=os.environ.get("TWINLEDGER_DEPLOYMENT_FILE", "deployment.json"),
                        help="the deployment file written by chain deploy (default $TWINLEDGER_DEPLOYMENT_FILE, "
                             "else deployment.json)")
    if operator:
        parser.add_argument("--operator-key", default="operator.key", help="hex private key file of the operator")


def add_plaintext_key(parser, *, role: str) -> None:
    """`--plaintext-key`: the commands that create a party's key write it encrypted (contracts/keystore.py)."""
    variable = keystore.passphrase_env_names(role)[0]
    parser.add_argument("--plaintext-key", action="store_true",
                        help=f"development only: write a new {role} key as plaintext hex instead of an encrypted "
                             f"keystore (whose passphrase is read from the file ${variable} names, or the "
                             "variables docs/ledger.md lists)")


def _chain_deploy(args) -> int:
    key_path = Path(args.operator_key)
    created = not key_path.exists()
    if created:
        keystore.create_key_file(key_path, role="operator", plaintext=args.plaintext_key)
    operator_key = lg.load_key(key_path, role="operator")  # a wrong passphrase is refused before any transaction
    w3 = connect(args)
    if created and args.fund_from_dev_account:
        from eth_account import Account

        lg.fund_from_dev_account(w3, Account.from_key(operator_key).address)
    deployment = lg.deploy(w3, operator_key)
    deployment.save(Path(args.out))
    print(f"Consortium {deployment.consortium}, ConsentRegistry {deployment.consent_registry}; wrote {args.out}")
    return 0


def _chain_encrypt_key(args) -> int:
    passphrase = keystore.passphrase_for(args.role)
    if passphrase is None:
        names = keystore.passphrase_env_names(args.role)
        raise lg.LedgerError(f"set {names[0]} to a file holding the new passphrase (or {' or '.join(names[1:])})")
    address = keystore.encrypt_key_file(Path(args.key_file), passphrase)
    print(f"{args.key_file} is now an encrypted keystore of account {address}")
    return 0


def _chain_fund(args) -> int:
    address = account_address(args.address)
    if args.ether <= 0:
        raise ValueError(f"--ether must be positive, got {args.ether}")
    w3 = connect(args)
    lg.fund_from_dev_account(w3, address, ether=args.ether)
    balance = w3.from_wei(w3.eth.get_balance(address), "ether")
    print(f"sent {args.ether} ether to {address}; its balance is {balance} ether")
    return 0


def _operator(args) -> lg.Ledger:
    return lg.Ledger.open(args.rpc_url, Path(args.deployment_file), key_path=Path(args.operator_key),
                          key_role="operator", ca_file=args.chain_ca_file)


def _study_propose(args) -> int:
    study_id = StudyId.new()
    _operator(args).propose_study(
        study_id, purpose=args.purpose, task_id=args.task, epsilon_budget=args.epsilon, delta_exponent=args.delta_exponent,
        rounds=args.rounds, ends_at=int(time.time()) + args.days * 24 * 3600,
        app_digest=args.app_digest or packaged_app_digest(),
    )
    print(study_id)
    return 0


def _register_hospital(args) -> int:
    _operator(args).register_hospital(args.account, secrets.token_bytes(32))
    print(f"registered hospital {args.account}")
    return 0


def _grant_coordinator(args) -> int:
    _operator(args).grant_coordinator(args.account)
    print(f"granted the coordinator role to {args.account}")
    return 0


def _audit(args) -> int:
    from contracts.audit import audit_study, load_usage_logs

    study_id = StudyId.parse(args.study)
    auditor = lg.Ledger(connect(args), lg.Deployment.load(Path(args.deployment_file)))
    result = audit_study(auditor, study_id, load_usage_logs([Path(p) for p in args.usage]),
                         report=Path(args.report) if args.report else None)
    print(json.dumps(result.as_dict(), indent=1))
    # Uses the chain node could not check (it no longer serves the state at their block) are no pass either.
    return 0 if result.violations == 0 and result.unverified == 0 else 1


def add_chain_commands(subparsers, *, add_start=None) -> None:
    """`twinledger chain deploy|fund`, after `chain start` if `add_start(chain_group)` adds it (deploy/cli.py)."""
    chain = subparsers.add_parser("chain", help="a local chain and the contracts").add_subparsers(dest="action",
                                                                                                 required=True)
    if add_start is not None:
        add_start(chain)
    deploy = chain.add_parser("deploy", help="deploy the contracts (the compiled ones shipped with TwinLedger)")
    add_rpc_url(deploy)
    deploy.add_argument("--operator-key", default="operator.key", help="the operator's key file; created if missing")
    deploy.add_argument("--fund-from-dev-account", action="store_true", help="fund a new operator key (dev chains)")
    add_plaintext_key(deploy, role="operator")
    deploy.add_argument("--out", default="deployment.json", help="where to write the deployment file (default deployment.json)")
    deploy.set_defaults(func=_chain_deploy)
    fund = chain.add_parser("fund", help="send ether for gas to an account from a dev chain's unlocked account")
    fund.add_argument("address", help="the account to fund (a hospital's or the coordinator's)")
    fund.add_argument("--ether", type=int, default=10, help="how much ether to send (default 10)")
    add_rpc_url(fund)
    fund.set_defaults(func=_chain_fund)
    encrypt = chain.add_parser("encrypt-key", help="turn a plaintext hex key file into an encrypted keystore, in "
                               "place (the passphrase from a file or the environment, see docs/ledger.md)")
    encrypt.add_argument("key_file", help="the key file (hospital.key, coordinator.key, operator.key)")
    encrypt.add_argument("--role", choices=keystore.ROLES, help="whose key it is: which passphrase variables to "
                         "read (default: TWINLEDGER_KEY_PASSPHRASE_FILE / TWINLEDGER_KEY_PASSPHRASE)")
    encrypt.set_defaults(func=_chain_encrypt_key)


def add_study_commands(subparsers):
    """`twinledger study propose|register-hospital|grant-coordinator`: the consortium operator's actions. Returns
    the group, for the commands deploy/ adds (`study run`)."""
    study = subparsers.add_parser("study", help="consortium operator actions").add_subparsers(dest="action", required=True)
    propose = study.add_parser("propose", help="propose a study; prints its id")
    add_chain_options(propose, operator=True)
    propose.add_argument("--purpose", default="HRESCH", help="HL7 v3 PurposeOfUse code (default HRESCH)")
    propose.add_argument("--task", default="heart-disease/v1", help="federated task id (default heart-disease/v1)")
    propose.add_argument("--epsilon", type=float, default=3.0, help="privacy budget per hospital (default 3.0)")
    propose.add_argument("--delta-exponent", type=int, default=5, help="delta = 10^-N (default 5)")
    propose.add_argument("--rounds", type=int, default=5, help="rounds the study allows (default 5)")
    propose.add_argument("--days", type=int, default=30, help="the study ends this many days from now (default 30)")
    propose.add_argument("--app-digest", help="SHA-256 (hex) of the FAB the study runs; hospitals' nodes run no "
                         "other (default: the packaged Flower app's, coordinator/flower_app)")
    propose.set_defaults(func=_study_propose)
    register = study.add_parser("register-hospital", help="register a hospital's account")
    add_chain_options(register, operator=True)
    register.add_argument("account", help="the hospital's account address (printed by node init)")
    register.set_defaults(func=_register_hospital)
    grant = study.add_parser("grant-coordinator", help="let an account anchor rounds")
    add_chain_options(grant, operator=True)
    grant.add_argument("account", help="the coordinator's account address (printed by coordinator init)")
    grant.set_defaults(func=_grant_coordinator)
    from contracts.consortium_cli import add_consortium_commands  # `twinledger consortium`: suspensions and roles

    add_consortium_commands(subparsers)
    return study


def add_audit_command(subparsers) -> None:
    audit = subparsers.add_parser("audit", help="audit a study's anchored rounds against the chain")
    add_chain_options(audit)
    audit.add_argument("--study", required=True, help="the study id (0x and 64 hex digits)")
    audit.add_argument("--report", help="the coordinator's report.json: its signed replies are verified too")
    audit.add_argument("usage", nargs="+", help="usage logs exported by the nodes")
    audit.set_defaults(func=_audit)
