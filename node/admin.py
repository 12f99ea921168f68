"""What hospital IT does with a node: set it up, import records, accept studies, enrol patients, export
the usage log for auditors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from eth_account import Account
from sqlmodel import select

from contracts.keystore import create_key_file as new_key_file
from contracts.ledger import ContractRejected, Ledger, SignedGrant, SignedRevoke, load_key
from federation.ids import Pseudonym
from node.records import ImportReport, import_file
from node.settings import NodeSettings
from node.store import Patient, Store
from node.vault import Vault, create_key_file

log = logging.getLogger(__name__)


def init_node(home: Path, *, hospital: str, rpc_url: str, deployment_file: Path | None, database_url: str = "",
              plaintext_key: bool = True) -> NodeSettings:
    """Create a node's home: configuration, data key and hospital account key (owner-only files).

    A new hospital key is an encrypted keystore under the hospital's passphrase from the environment
    (contracts/keystore.py `create_key_file`) unless `plaintext_key`: the library default, for tests and the
    demo's in-process consortium; `twinledger node init` encrypts unless given --plaintext-key."""
    settings = NodeSettings(
        home=Path(home).resolve(), hospital=hospital, rpc_url=rpc_url, deployment_file=deployment_file,
        database_url=database_url,
    )
    if not settings.hospital_key_file.exists():  # first: without a passphrase nothing is written
        new_key_file(settings.hospital_key_file, role="hospital", plaintext=plaintext_key)
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.save()
    if not settings.data_key_file.exists():
        create_key_file(settings.data_key_file)
    Store(settings.resolved_database_url)
    database = settings.home / "node.db"
    if not settings.database_url and database.exists():
        database.chmod(0o600)  # it holds the map from record numbers to pseudonyms
    settings.home.chmod(0o700)
    return settings


def hospital_address(settings: NodeSettings) -> str:
    """The hospital's account: its registration address (kept in the home once its key rotated), else its key's."""
    from node.hospital_key import recorded_hospital_account

    key_file = settings.hospital_key_file
    return recorded_hospital_account(key_file) or Account.from_key(load_key(key_file)).address


def import_records(settings: NodeSettings, path: Path, *, record_prefix: str | None = None,
                   cohort: str | None = None) -> ImportReport:
    """Heart-disease CSV or Bundle, or twins' (type 1 diabetes) CSV or Bundle: node.records.import_file."""
    store = Store(settings.resolved_database_url)
    vault = Vault.open(settings.data_key_file)
    return import_file(store, vault, Path(path), record_prefix=record_prefix or settings.hospital.upper()[:3],
                       cohort=cohort, record_system=settings.record_number_system or None)


def enrol_patients(settings: NodeSettings, ledger: Ledger, consent_keys: dict[str, str]) -> int:
    """Bind patients (by record number) to their own consent addresses on chain; returns how many.

    The ledger commits to the enrolment before sending it, so nobody can enrol these pseudonyms first; the
    key stored here is the one the consent gate later requires on chain. A pseudonym that is enrolled
    already (a failed earlier run, or a leak of this database) is said by record number: the gate never
    reads a patient enrolled by another hospital or with another key."""
    store = Store(settings.resolved_database_url)
    with store.session() as session:
        patients = {p.record_number: p for p in session.exec(select(Patient))}
        unknown = sorted(set(consent_keys) - set(patients))
        if unknown:
            raise KeyError(f"unknown patient record number(s): {', '.join(unknown[:5])}")
        todo = [patients[n] for n in consent_keys if patients[n].consent_key is None]
        if todo:
            try:
                ledger.enrol([Pseudonym.parse(p.pseudonym) for p in todo], [consent_keys[p.record_number] for p in todo])
            except ContractRejected as exc:
                if exc.error_name != "AlreadyEnrolled":
                    raise
                taken = _enrolled_elsewhere(ledger, todo, consent_keys)
                raise ContractRejected(
                    f"{exc}; on chain already: {', '.join(taken[:5]) or 'none of them now'} (nothing was enrolled: "
                    "a patient enrolled by another hospital or with another key is never read by this node; give "
                    "such patients a new pseudonym)", error_name=exc.error_name,
                ) from exc
            for patient in todo:
                patient.consent_key = consent_keys[patient.record_number]
                session.add(patient)
            session.commit()
    return len(todo)


def _enrolled_elsewhere(ledger: Ledger, patients: list[Patient], consent_keys: dict[str, str]) -> list[str]:
    """Record numbers of `patients` whose pseudonym is on chain already, and by whom, in words."""
    taken = []
    for patient in patients:
        pseudonym = Pseudonym.parse(patient.pseudonym)
        hospital = ledger.consent.functions.enrolledBy(pseudonym).call()
        if int(hospital, 16):
            key = ledger.consent.functions.patientOf(pseudonym).call()[0]
            whose = "by this hospital" if hospital == ledger.address else f"by hospital {hospital}"
            same = "the same key" if key == consent_keys[patient.record_number] else "another key"
            taken.append(f"{patient.record_number} ({whose}, {same})")
    return taken


def relay_grants(ledger: Ledger, grants: list[SignedGrant]) -> int:
    """Relay patients' signed consents (the hospital pays the gas; patients need no ether). A grant that
    somebody relayed first is skipped by the registry and logged here, not an error."""
    receipts = ledger.relay_grants(grants)
    for pseudonym, nonce in ledger.skipped_grants(receipts):
        log.info("grant for %s (nonce %d) was relayed already or voided: skipped", pseudonym.short(12), nonce)
    return receipts[-1]["blockNumber"] if receipts else ledger.block_number()


def relay_revoke(ledger: Ledger, revoke: SignedRevoke) -> int:
    return ledger.relay_revoke(revoke)["blockNumber"]


def pseudonyms_by_record(settings: NodeSettings) -> dict[str, str]:
    """Every patient's pseudonym (0x-hex) by record number, in import order, from one database read."""
    return {p.record_number: p.pseudonym for p in Store(settings.resolved_database_url).patients()}


def export_usage(settings: NodeSettings, out: Path) -> Path:
    """The node's audit log in full: every pseudonym set it read, per study, round and phase, with its status
    (intent: read and never completed, completed, voided: refused after reading; node/store.py)."""
    store = Store(settings.resolved_database_url)
    entries = [
        {
            "study_id": u.study_id, "round": u.round, "phase": u.phase, "block": u.block,
            "commitment": u.commitment, "pseudonyms": u.pseudonym_list, "status": u.status,
            "redacted": u.redaction_list,  # erased patients, their consent verified at erasure (node/erase.py)
        }
        for u in store.usage_log()
    ]
    document = {"hospital": settings.hospital, "account": hospital_address(settings), "entries": entries}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1))
    return out
