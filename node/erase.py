"""Erasing a patient (`twinledger node erase`), as docs/privacy.md describes, with a receipt.

Deleted: the patient's row (encrypted record and the record-number-to-pseudonym link), its provenance, and
everything of the portal that names the patient (account, sessions, device cookies, enrolment codes, login
failures under the account's name, consent changes in the outbox).

Redacted: each usage-log entry naming the patient, once the chain confirms (the audit's own read,
contracts/audit.py) that the patient's pseudonym held consent for the entry's study at the entry's block. The
entry keeps the commitment the node computed over its pseudonyms (what the round anchor holds), drops the
pseudonym, and records that one erased patient's consent was verified then (the block, when). The audit matches
such an entry's stored commitment against the anchor and reports its erased patients apart. An entry is never
redacted when the chain says the use had no consent (a violation stays for the auditor to see), when the chain
node no longer serves the state at its block, or when its stored commitment is not the one its pseudonyms give.
When the chain cannot be read at all, nothing is erased (run it again when it can).

Afterwards the database file is rewritten (secure_delete, VACUUM, and a truncating WAL checkpoint): no free page
keeps the erased rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.exc import OperationalError
from sqlalchemy import func, update
from sqlmodel import delete, select

from contracts.ledger import Ledger, LedgerError, StateUnavailable
from federation.ids import Pseudonym, StudyId
from node.settings import NodeSettings
from node.store import Patient, PatientSource, RoundRefusal, RoundUsage, Store


class ErasureError(ValueError):
    """The patient cannot be erased (unknown to this node, or the chain cannot be read): one line for the user."""


LIMITS = ("backups of the node home made before now still hold the record; usage logs exported before now hold "
          "the pseudonym; models already trained keep the patient's DP-limited contribution; the pseudonym, "
          "consent key and consent history stay on chain, linked to nobody; an auditor takes the node's word that "
          "the redacted uses had consent (checked on chain at erasure, reported apart)")


@dataclass
class _Verdict:
    entry: RoundUsage
    why_kept: str | None  # None: redact


def erase_patient(settings: NodeSettings, patient: str, *, ledger: Ledger | None = None,
                  now: datetime | None = None) -> dict:
    """Erase the patient (record number, or pseudonym as 0x-hex) and write a receipt in <home>/erasures/;
    returns the receipt. `ledger` reads consent (default: opened read-only from the settings, only when a usage
    entry names the patient). ErasureError when no patient of this node has that number or pseudonym, or when
    the chain cannot be read or the database written (nothing is erased then)."""
    store = Store(settings.resolved_database_url)
    erased_at = now or datetime.now(timezone.utc)
    try:
        deleted, redacted, kept, pseudonym = _erase(store, settings, patient, ledger, erased_at)
        rewritten = _rewrite_file(store)
    except OperationalError as exc:  # the transaction rolled back: nothing erased
        raise ErasureError(f"nothing erased: the node's database {store.engine.url.database} cannot be written now "
                           f"({exc.orig}); run the erase again") from None
    finally:
        store.engine.dispose()  # no pooled connection of ours keeps SQLite from checkpointing
    receipt = {
        "erased_at": erased_at.isoformat(timespec="seconds"),
        "pseudonym_sha256": hashlib.sha256(pseudonym.encode()).hexdigest(),
        "deleted": deleted,
        "redacted": redacted,  # usage-log entries that no longer name the patient
        "kept": kept,  # usage-log entries that still do, each with why
        "database_file": rewritten,
        "limits": LIMITS,
    }
    folder = settings.home / "erasures"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"erasure-{erased_at:%Y%m%dT%H%M%SZ}-{receipt['pseudonym_sha256'][:12]}.json"
    path.write_text(json.dumps(receipt, indent=1) + "\n")
    receipt["receipt_file"] = str(path)
    return receipt


def _erase(store: Store, settings: NodeSettings, patient: str, ledger: Ledger | None, erased_at: datetime):
    """Delete and redact in one transaction; returns (deleted per table, redacted, kept, pseudonym)."""
    from node.portal.models import (
        ConsentRelay, DeviceCookie, EnrolmentCode, LoginFailure, PortalAccount, PortalSession)

    deleted: dict[str, int] = {}
    with store.session() as session:
        if store.engine.dialect.name == "sqlite":  # deleted and rewritten cells are zeroed, not left in free space
            session.connection().exec_driver_sql("PRAGMA secure_delete = ON")
        row = session.exec(select(Patient).where(
            (Patient.record_number == patient) | (Patient.pseudonym == patient.lower()))).first()
        if row is None:
            raise ErasureError(f"unknown patient {patient!r}: no record of this node has this record number or "
                               "pseudonym (never imported, or erased already)")
        pseudonym, number = row.pseudonym.lower(), row.record_number
        naming = [u for u in session.exec(select(RoundUsage).order_by(RoundUsage.id))
                  if pseudonym in (p.lower() for p in u.pseudonym_list)]
        verdicts = _verify(naming, pseudonym, ledger if ledger is not None or not naming else _ledger(settings))
        accounts = list(session.exec(select(PortalAccount).where(PortalAccount.record_number == number)))
        account_ids = [a.id for a in accounts]

        def drop(name: str, statement) -> None:
            deleted[name] = session.exec(statement).rowcount

        drop("provenance", delete(PatientSource).where(PatientSource.pseudonym == row.pseudonym))  # before its patient
        drop("portal_sessions", delete(PortalSession).where(PortalSession.account_id.in_(account_ids)))
        drop("device_cookies", delete(DeviceCookie).where(DeviceCookie.account_id.in_(account_ids)))
        drop("consent_changes", delete(ConsentRelay).where(
            ConsentRelay.account_id.in_(account_ids) | (ConsentRelay.pseudonym == pseudonym)))
        drop("login_failures", delete(LoginFailure).where(
            LoginFailure.kind == "account", LoginFailure.subject.in_([a.username for a in accounts])))
        drop("enrolment_codes", delete(EnrolmentCode).where(EnrolmentCode.record_number == number))
        drop("portal_account", delete(PortalAccount).where(PortalAccount.record_number == number))
        drop("record", delete(Patient).where(Patient.pseudonym == row.pseudonym))
        # A refusal's reason may name the record it could not decrypt by the pseudonym's first characters.
        prefix = pseudonym[:10]
        deleted["refusal_reasons_redacted"] = session.exec(update(RoundRefusal).where(
            RoundRefusal.reason.contains(prefix)).values(reason=func.replace(RoundRefusal.reason, prefix, "(erased)"))
        ).rowcount
        redacted, kept = [], []
        for verdict in verdicts:
            entry = verdict.entry
            where = {"study": entry.study_id, "round": entry.round, "phase": entry.phase}
            if verdict.why_kept:
                kept.append({**where, "block": entry.block, "why": verdict.why_kept})
                continue
            entry.pseudonyms = json.dumps([p for p in entry.pseudonym_list if p.lower() != pseudonym])
            entry.redactions = json.dumps(entry.redaction_list + [
                {"block": entry.block, "verified_at": erased_at.isoformat(timespec="seconds")}])
            session.add(entry)
            redacted.append({**where, "consent_verified_at_block": entry.block})
        session.commit()
    return deleted, redacted, kept, pseudonym


def _ledger(settings: NodeSettings) -> Ledger:
    try:
        return Ledger.from_settings(settings)  # read-only: no key needed to read consent
    except LedgerError as exc:
        raise ErasureError(f"nothing erased: the patient's usage-log entries are redacted only after the chain "
                           f"confirms their consent, and the chain cannot be opened ({exc})") from None


def _verify(entries: list[RoundUsage], pseudonym: str, ledger: Ledger | None) -> list[_Verdict]:
    """Whether each entry may drop the pseudonym: the chain's answer at the entry's block, as the audit reads it."""
    verdicts = []
    for entry in entries:
        if str(entry.phase_commitment()) != entry.commitment:  # checked once, before its first redaction
            verdicts.append(_Verdict(entry, "its stored commitment is not the one its pseudonyms give (a damaged or "
                                            "altered log): kept as it is for the auditor"))
            continue
        try:
            held = ledger.consents(StudyId.parse(entry.study_id), [Pseudonym.parse(pseudonym)], block=entry.block)[0]
        except StateUnavailable as exc:
            verdicts.append(_Verdict(entry, f"consent at block {entry.block} cannot be read on this chain node "
                                            f"({exc}): kept for an auditor whose chain node can"))
            continue
        except LedgerError as exc:
            raise ErasureError(f"nothing erased: the chain cannot be read to confirm the patient's consent at block "
                               f"{entry.block} ({exc}); run the erase again when it can") from None
        verdicts.append(_Verdict(entry, None if held else
                                 f"the patient was used without consent at block {entry.block}: a violation, kept "
                                 "for the auditor to see"))
    return verdicts


def _rewrite_file(store: Store) -> str:
    """Leave no copy of the erased rows in the database file's free pages or its write-ahead log; says how it went
    (for the receipt)."""
    if store.engine.dialect.name != "sqlite":
        return "not SQLite: the database's own tools decide what its files keep"
    try:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM")
            if connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal":
                connection.exec_driver_sql("PRAGMA busy_timeout = 1000")  # a reader's moment, not the default 5 s
                busy = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()[0]
                if busy:
                    return ("rewritten in its write-ahead log; the main file keeps the old pages until SQLite's next "
                            "checkpoint (another process was reading): stopping the node's portal and console lets "
                            "the last connection checkpoint as it closes")
    except OperationalError as exc:
        return (f"not rewritten ({exc.orig}): deleted rows were zeroed (secure_delete), but free pages may remain "
                "until the next VACUUM")
    return "rewritten (VACUUM): no free page keeps the erased rows"
