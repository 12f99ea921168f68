"""Imports from an upload (CSV or FHIR R4 Bundle), the patient list, one record's sources (identifier system and
provenance) and enrolment codes, for the console."""

from __future__ import annotations

import re
import tempfile
from datetime import timezone
from pathlib import Path

from sqlmodel import Session, func, select

from node import admin
from federation.web.errors import WebError
from node.console.deps import ConsoleState
from node.console.schemas import ImportOut, PatientOutcomeOut, OutstandingCode, PatientOut, PatientPage, RecordOut
from node.portal.models import EnrolmentCode, PortalAccount, now
from node.records import provenance
from node.store import Patient, PatientSource
from node.vault import Vault, VaultError

CSV_TYPES = {"text/csv", "text/plain", "application/csv"}
FHIR_TYPES = {"application/fhir+json", "application/json"}
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def upload_format(content_type: str) -> str:
    media = content_type.split(";")[0].strip().lower()
    if media in CSV_TYPES:
        return "csv"
    if media in FHIR_TYPES:
        return "fhir"
    shown = repr(media) if media else "no content type"
    raise WebError(f"send a CSV file (text/csv) or a FHIR R4 Bundle (application/fhir+json), not {shown}",
                       status=415)


def source_name(filename: str | None, fmt: str) -> str:
    """A safe file name for the upload, whose ending tells node/records/registry.py how to read it (.json: a
    Bundle)."""
    name = SAFE_NAME.sub("_", Path(filename or "").name).strip("._")[:100]
    name = name or ("upload.csv" if fmt == "csv" else "upload.json")
    is_json = name.lower().endswith(".json")
    if fmt == "fhir" and not is_json:
        return name + ".json"
    return name + ".csv" if fmt == "csv" and is_json else name


def import_upload(state: ConsoleState, data: bytes, *, fmt: str, filename: str | None,
                  record_prefix: str | None) -> ImportOut:
    """As `twinledger node import` (node.records.import_file: heart-disease or twins' records, CSV or Bundle):
    all or nothing; a RecordFileError names every problem and nothing is written."""
    node = state.settings.node
    source = source_name(filename, fmt)
    if not data.strip():
        raise WebError(f"{source}: the upload is empty", status=422)
    with state.import_lock:
        # The importers read files: the upload stays in an owner-only directory inside the node home for the
        # length of the import, and is deleted with it.
        with tempfile.TemporaryDirectory(dir=node.home, prefix=".import-") as folder:
            path = Path(folder) / source
            path.write_bytes(data)
            try:
                report = admin.import_records(node, path, record_prefix=record_prefix)
            except VaultError as exc:
                raise WebError(f"the node's data key cannot be used: {exc}", status=409) from None
            except ValueError as exc:  # RecordFileError (every reader's refusals derive from it)
                raise WebError(str(exc).replace(str(path), source), status=422) from None
    noted = [p for p in report.patients if p.outcome in ("updated", "rejected")]
    return ImportOut(source=report.source, format=fmt, imported=report.imported, incomplete=report.incomplete,
                     already_present=report.already_present, updated=report.updated, rejected=report.rejected,
                     skipped=report.skipped, cohorts=report.cohorts,
                     patients=[PatientOutcomeOut(record_number=p.record_number, outcome=p.outcome, reasons=p.reasons)
                               for p in noted])


def _patient_out(p: Patient, *, portal_account: bool) -> PatientOut:
    return PatientOut(record_number=p.record_number, kind=getattr(p, "kind", "heart-disease"), cohort=p.cohort,
                      source=p.source, imported_at=p.imported_at.replace(tzinfo=p.imported_at.tzinfo or timezone.utc),
                      enrolled=p.consent_key is not None, portal_account=portal_account)


def record_view(state: ConsoleState, db: Session, record_number: str) -> RecordOut:
    """One record as hospital IT sees it: the list's columns, the identifier system and each stored value's
    provenance (opened with the node's data key: which tests a patient had, and when, is clinical), never the
    values."""
    patient = db.exec(select(Patient).where(Patient.record_number == record_number)).first()
    if patient is None:
        raise WebError(f"no patient with record number {record_number!r}", status=404)
    source = db.get(PatientSource, patient.pseudonym)
    try:
        vault = Vault.open(state.settings.node.data_key_file)
        found = provenance.open_sealed(vault, source.provenance if source else None, pseudonym=patient.pseudonym)
    except VaultError as exc:
        raise WebError(f"the node's data key cannot be used: {exc}", status=409) from None
    account = db.exec(select(PortalAccount.record_number).where(PortalAccount.record_number == record_number)).first()
    return RecordOut(**_patient_out(patient, portal_account=account is not None).model_dump(),
                     identifier_system=source.identifier_system if source else None, provenance=found)


def patient_page(db: Session, *, offset: int, limit: int, cohort: str | None) -> PatientPage:
    query = select(Patient)
    count = select(func.count()).select_from(Patient)
    if cohort:
        query, count = query.where(Patient.cohort == cohort), count.where(Patient.cohort == cohort)
    total = db.exec(count).one()
    rows = list(db.exec(query.order_by(Patient.id).offset(offset).limit(limit)))
    numbers = [p.record_number for p in rows]
    with_account = set(db.exec(select(PortalAccount.record_number).where(PortalAccount.record_number.in_(numbers))))
    return PatientPage(total=total, offset=offset, patients=[
        _patient_out(p, portal_account=p.record_number in with_account) for p in rows])


def outstanding_codes(db: Session) -> list[OutstandingCode]:
    """Codes not yet redeemed and not expired (the codes themselves are not stored, only their hashes)."""
    rows = db.exec(select(EnrolmentCode).where(EnrolmentCode.used_at.is_(None)).order_by(EnrolmentCode.id.desc()))
    moment = now()
    out = []
    for row in rows:
        expires = row.expires_at.replace(tzinfo=row.expires_at.tzinfo or timezone.utc)
        if expires > moment:
            out.append(OutstandingCode(record_number=row.record_number, expires_at=expires,
                                       created_at=row.created_at.replace(tzinfo=row.created_at.tzinfo or timezone.utc)))
    return out
