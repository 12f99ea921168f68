"""The node's health: chain, SuperLink, database, key files, last round. Each check answers within its timeout.
`node_health` is the console's health page (/api/health, staff only); `readiness` is what /readyz checks
(federation/web/probes.py, no login): the same checks, and the database must also accept a write."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlmodel import func, select

from contracts.ledger import LedgerError, connect
from federation.web import probes
from node.console.deps import ConsoleState
from node.console.schemas import ChainCheck, Check, HealthOut, LastRound, SuperLinkCheck
from node.store import Patient, RoundUsage


def check_chain(state: ConsoleState) -> ChainCheck:
    node = state.settings.node
    account = _hospital_account(state)
    try:
        if not state.can_open_ledger:
            # Without a deployment file the node refuses every round; still say whether the chain answers.
            latest = connect(node.rpc_url, timeout_s=state.settings.health_timeout_s, ca_file=node.chain_ca_file,
                             allow_plain_http=node.allow_plain_rpc).eth.block_number
            return ChainCheck(ok=False, rpc_url=node.rpc_url, latest_block=latest, hospital_account=account,
                              detail="the chain answers, but node.toml names no deployment file: the node refuses "
                                     "every round")
        ledger = state.ledger()
        ledger.verify_chain()  # the chain still holds the deployment's contracts (ChainReset otherwise)
        latest = ledger.block_number()
    except LedgerError as exc:
        return ChainCheck(ok=False, rpc_url=node.rpc_url, hospital_account=account, detail=str(exc))
    except Exception as exc:  # noqa: BLE001 - a health check reports, it does not fail
        return ChainCheck(ok=False, rpc_url=node.rpc_url, hospital_account=account,
                          detail=f"the chain did not answer ({type(exc).__name__})")
    return ChainCheck(ok=True, rpc_url=node.rpc_url, latest_block=latest, hospital_account=account,
                      detail="the chain answers and holds the contracts")


def _hospital_account(state: ConsoleState) -> str | None:
    try:
        return state.hospital_account()
    except Exception:  # noqa: BLE001 - reported by the key check
        return None


def check_superlink(state: ConsoleState) -> SuperLinkCheck:
    address = state.settings.superlink.strip()
    if not address:
        return SuperLinkCheck(ok=False, address="", detail="no SuperLink address configured (console.toml superlink, "
                                                           "TWINLEDGER_SUPERLINK or --superlink)")
    host, _, port = address.rpartition(":")
    if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        return SuperLinkCheck(ok=False, address=address, detail="the SuperLink address is not host:port")
    found = probes.reachable(address, timeout_s=state.settings.health_timeout_s)
    return SuperLinkCheck(ok=found.ok, address=address, detail=found.detail)


def check_keys(state: ConsoleState) -> Check:
    node = state.settings.node
    found = probes.key_files({"data key": node.data_key_file, "hospital key": node.hospital_key_file})
    return Check(ok=found.ok, detail=found.detail)


def check_database(state: ConsoleState) -> tuple[Check, int, LastRound | None]:
    try:
        with state.store.session() as db:
            patients = db.exec(select(func.count()).select_from(Patient)).one()
            usage = db.exec(select(RoundUsage).order_by(RoundUsage.id.desc()).limit(1)).first()
    except Exception as exc:  # noqa: BLE001 - a health check reports, it does not fail
        return Check(ok=False, detail=f"the database cannot be read ({type(exc).__name__})"), 0, None
    detail = "the database answers"
    home_db = state.settings.node.home / "node.db"
    if not state.settings.node.database_url and home_db.exists() and home_db.stat().st_mode & 0o077:
        return Check(ok=False, detail=f"{home_db} is readable by others: chmod 600 it"), patients, None
    last = None
    if usage is not None:
        last = LastRound(study_id=usage.study_id, round=usage.round, phase=usage.phase, block=usage.block,
                         patients_used=len(usage.pseudonym_list) + len(usage.redaction_list), recorded_at=usage.recorded_at)
    return Check(ok=True, detail=detail), patients, last


def node_health(state: ConsoleState) -> HealthOut:
    with ThreadPoolExecutor(max_workers=2) as pool:  # the two network checks wait in parallel
        chain = pool.submit(check_chain, state)
        superlink = pool.submit(check_superlink, state)
        database, patients, last = check_database(state)
        keys = check_keys(state)
        chain_check, superlink_check = chain.result(), superlink.result()
    return HealthOut(
        hospital=state.settings.node.hospital,
        ok=all(c.ok for c in (chain_check, superlink_check, database, keys)),
        chain=chain_check, superlink=superlink_check, database=database, keys=keys, patients=patients,
        last_round=last,
    )


def readiness(state: ConsoleState) -> probes.Checks:
    """/readyz's checks: the chain (with the contracts), the SuperLink, the database (read and write), the keys."""

    def database() -> probes.Check:
        read = check_database(state)[0]
        return probes.database_writable(state.store.engine) if read.ok else probes.Check(False, read.detail)

    return {
        "chain": lambda: _plain(check_chain(state)),
        "superlink": lambda: _plain(check_superlink(state)),
        "database": database,
        "keys": lambda: _plain(check_keys(state)),
    }


def _plain(check: Check) -> probes.Check:
    return probes.Check(check.ok, check.detail)
