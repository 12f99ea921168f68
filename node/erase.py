"""Erasing a patient (`twinledger node erase`), as docs/privacy.md describes, with a receipt.

Deleted: the patient's row (encrypted record and the record-number-to-pseudonym link), its provenance, and
everything of the portal that names the patient (account, sessions, device cookies, enrolment codes, login
failures under the account's name, consent changes in the outbox). Kept: the usage log's entries, pseudonym
included: the audit (contracts/audit.py) recomputes each entry's commitment from its pseudonyms and asks the
chain whether each held consent at the entry's block, so an entry without the pseudonym would no longer
match what was anchored. With the link deleted the pseudonym names nobody, as on chain, where the same
pseudonym and its consent history stay.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from sqlmodel import delete, select

from node.settings import NodeSettings
from node.store import Patient, PatientSource, Store


class ErasureError(ValueError):
    """The patient cannot be erased (unknown to this node): one line for the user."""


KEPT = ("usage-log entries keep the pseudonym: the audit recomputes each anchored commitment from them and asks "
        "the chain about each one's consent; without the record-number link it names nobody")
LIMITS = ("backups of the node home made before now still hold the record; usage logs exported before now hold "
          "the pseudonym; models already trained keep the patient's DP-limited contribution; the pseudonym, "
          "consent key and consent history stay on chain, linked to nobody")


def erase_patient(settings: NodeSettings, patient: str, *, now: datetime | None = None) -> dict:
    """Erase the patient (record number, or pseudonym as 0x-hex) and write a receipt in <home>/erasures/;
    returns the receipt. ErasureError when no patient of this node has that number or pseudonym."""
    from node.portal.models import (
        ConsentRelay, DeviceCookie, EnrolmentCode, LoginFailure, PortalAccount, PortalSession)
    from node.store import RoundUsage

    store = Store(settings.resolved_database_url)
    erased_at = now or datetime.now(timezone.utc)
    deleted: dict[str, int] = {}
    with store.session() as session:
        row = session.exec(select(Patient).where(
            (Patient.record_number == patient) | (Patient.pseudonym == patient.lower()))).first()
        if row is None:
            raise ErasureError(f"unknown patient {patient!r}: no record of this node has this record number or "
                               "pseudonym (never imported, or erased already)")
        pseudonym, number = row.pseudonym, row.record_number
        accounts = list(session.exec(select(PortalAccount).where(PortalAccount.record_number == number)))
        account_ids = [a.id for a in accounts]

        def drop(name: str, statement) -> None:
            deleted[name] = session.exec(statement).rowcount

        drop("provenance", delete(PatientSource).where(PatientSource.pseudonym == pseudonym))  # before its patient
        drop("portal_sessions", delete(PortalSession).where(PortalSession.account_id.in_(account_ids)))
        drop("device_cookies", delete(DeviceCookie).where(DeviceCookie.account_id.in_(account_ids)))
        drop("consent_changes", delete(ConsentRelay).where(
            ConsentRelay.account_id.in_(account_ids) | (ConsentRelay.pseudonym == pseudonym.lower())))
        drop("login_failures", delete(LoginFailure).where(
            LoginFailure.kind == "account", LoginFailure.subject.in_([a.username for a in accounts])))
        drop("enrolment_codes", delete(EnrolmentCode).where(EnrolmentCode.record_number == number))
        drop("portal_account", delete(PortalAccount).where(PortalAccount.record_number == number))
        drop("record", delete(Patient).where(Patient.pseudonym == pseudonym))
        usage = [u for u in session.exec(select(RoundUsage)) if pseudonym in u.pseudonym_list]
        session.commit()
    receipt = {
        "erased_at": erased_at.isoformat(timespec="seconds"),
        "pseudonym_sha256": hashlib.sha256(pseudonym.lower().encode()).hexdigest(),
        "deleted": deleted,
        "kept": {"usage_entries": len(usage), "why": KEPT},
        "limits": LIMITS,
    }
    folder = settings.home / "erasures"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"erasure-{erased_at:%Y%m%dT%H%M%SZ}-{receipt['pseudonym_sha256'][:12]}.json"
    path.write_text(json.dumps(receipt, indent=1) + "\n")
    receipt["receipt_file"] = str(path)
    return receipt
