"""`twinledger consortium ...`: the operator's governance from the command line (docs/ledger.md, "Roles").

Suspend and reinstate a hospital, name a new chain key for a hospital that lost its own, suspend and resume a
study, revoke the coordinator role, grant the operator role to a second account (a colleague's key or a multisig
wallet's address) and revoke it, and show who holds which role. Each command signs one or two transactions with `--operator-key`; a refusal (a missing role, the last
admin) is one line and exit status 2, like every chain command.
"""

from __future__ import annotations

from contracts.cli import _operator, account_address, add_chain_options
from federation.ids import StudyId


def _suspend_hospital(args) -> int:
    account = account_address(args.account)
    _operator(args).set_hospital_suspended(account, args.suspended)
    if args.suspended:
        print(f"suspended hospital {account}: it accepts no study and its node trains on nothing; the coordinator's "
              "node follower unregisters its SuperNode")
    else:
        print(f"reinstated hospital {account}")
    return 0


def _suspend_study(args) -> int:
    study_id = StudyId.parse(args.study)
    _operator(args).set_study_suspended(study_id, args.suspended)
    print(f"{'suspended' if args.suspended else 'resumed'} study {study_id}")
    return 0


def _revoke_coordinator(args) -> int:
    account = account_address(args.account)
    _operator(args).revoke_coordinator(account)
    print(f"revoked the coordinator role of {account}: it can anchor no round")
    return 0


def _grant_operator(args) -> int:
    account = account_address(args.account)
    operator = _operator(args)
    operator.grant_operator(account, admin=args.admin)
    print(f"{account} holds {', '.join(operator.roles_of(account))}")
    return 0


def _revoke_operator(args) -> int:
    account = account_address(args.account)
    operator = _operator(args)
    operator.revoke_operator(account)
    print(f"{account} holds {', '.join(operator.roles_of(account)) or 'no role'}; "
          f"{operator.admin_count()} admin(s) remain")
    return 0


def _set_hospital_signer(args) -> int:
    account, signer = account_address(args.account), account_address(args.signer)
    _operator(args).set_hospital_signer(account, signer)
    print(f"hospital {account} now acts through {signer}; its previous key can do nothing for it")
    return 0


def _roles(args) -> int:
    account = account_address(args.account)
    operator = _operator(args)
    print(f"{account} holds {', '.join(operator.roles_of(account)) or 'no role'}")
    return 0


def add_consortium_commands(subparsers) -> None:
    group = subparsers.add_parser("consortium", help="the operator's governance: suspensions and roles")
    consortium = group.add_subparsers(dest="action", required=True)

    def command(name: str, help_text: str, func, *, target: str, target_help: str, **defaults):
        parser = consortium.add_parser(name, help=help_text)
        add_chain_options(parser, operator=True)
        parser.add_argument(target, help=target_help)
        parser.set_defaults(func=func, **defaults)
        return parser

    hospital = "the hospital's account address"
    command("suspend-hospital", "suspend a hospital: no study accepted, no training, its node shut out",
            _suspend_hospital, target="account", target_help=hospital, suspended=True)
    command("reinstate-hospital", "lift a hospital's suspension", _suspend_hospital, target="account",
            target_help=hospital, suspended=False)
    study = "the study id (0x and 64 hex digits)"
    command("suspend-study", "suspend a study for every hospital: their nodes refuse its rounds", _suspend_study,
            target="study", target_help=study, suspended=True)
    command("resume-study", "lift a study's suspension", _suspend_study, target="study", target_help=study,
            suspended=False)
    command("revoke-coordinator", "take the coordinator role from an account: it anchors no round after",
            _revoke_coordinator, target="account", target_help="the coordinator's account address")
    grant = command("grant-operator", "let a second account act as the operator (a key's or a multisig's address)",
                    _grant_operator, target="account", target_help="the account address")
    grant.add_argument("--admin", action="store_true",
                       help="also the admin role: it grants and revokes roles, the first operator's too")
    command("revoke-operator", "take the operator and admin roles from an account (never the last admin's)",
            _revoke_operator, target="account", target_help="the account address")
    signer = command("set-hospital-signer", "give a hospital that lost its chain key a new one (the hospital's "
                     "own rotation is twinledger node rotate-hospital-key)", _set_hospital_signer, target="account",
                     target_help=hospital)
    signer.add_argument("signer", help="the new key's account address")
    command("roles", "the roles an account holds", _roles, target="account", target_help="the account address")
