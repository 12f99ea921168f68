"""The one writer of imported records: each new patient gets a random pseudonym, the clinical fields are sealed
(node/vault.py, AES-GCM bound to the pseudonym) and stored with the record kind and cohort (node/store.py).

A record number already in the store is never skipped silently (docs/node.md, "Importing records"):
- same kind, same values: `already_present` (unchanged);
- same kind, new values: updated in place (same pseudonym, re-sealed): the new file's values replace the stored
  ones field by field, a value the new file lacks (None) keeps the stored one; the changed field names are listed
  in the report. A train or test record keeps its cohort (a patient never moves between training and test); an
  incomplete one takes the cohort the new file's split gives it;
- another kind (a twins file naming a heart-disease record, or the reverse): a conflict, the patient rejected
  with the reason, the rest of the file imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from sqlmodel import select

from federation.ids import Pseudonym
from node.records.base import ImportReport, PatientOutcome
from node.store import Patient, Store
from node.vault import Vault


def _merge(stored: dict, new: dict) -> dict:
    merged = dict(stored)
    merged.update({key: value for key, value in new.items() if value is not None})
    return merged


def write_records(store: Store, vault: Vault, records: Sequence[tuple[str, dict]], cohorts: Sequence[str], *,
                  kind: str, source: str) -> ImportReport:
    """Store (record number, clinical fields) pairs of one kind, each in its cohort, in one transaction."""
    report = ImportReport(source=source, format=getattr(records, "format", "csv"),
                          skipped=dict(getattr(records, "skipped", {})),
                          provenance=dict(getattr(records, "provenance", {})))
    for number, why in getattr(records, "rejected", []):
        report.rejected += 1
        report.patients.append(PatientOutcome(number, "rejected", reasons=[why]))
    with store.session() as session:
        numbers = [number for number, _ in records]
        existing = {}
        for at in range(0, len(numbers), 500):  # bounded IN lists
            chunk = numbers[at:at + 500]
            existing.update({p.record_number: p for p in session.exec(select(Patient).where(Patient.record_number.in_(chunk)))})
        for (number, clinical), cohort in zip(records, cohorts, strict=True):
            stored = existing.get(number)
            if stored is None:
                pseudonym = str(Pseudonym.new())
                session.add(Patient(record_number=number, pseudonym=pseudonym, cohort=cohort, kind=kind, source=source,
                                    clinical=vault.seal(clinical, associated=pseudonym)))
                report.imported += 1
                report.incomplete += cohort == "incomplete"
                report.cohorts[cohort] = report.cohorts.get(cohort, 0) + 1
                report.patients.append(PatientOutcome(number, "imported", cohort))
                continue
            if stored.kind != kind:
                report.rejected += 1
                report.patients.append(PatientOutcome(number, "rejected", stored.cohort, [
                    f"record number {number!r} already holds a {stored.kind} record (from {stored.source}); "
                    f"a {kind} record cannot replace it: a conflict, nothing changed"]))
                continue
            before = vault.open_record(stored.clinical, associated=stored.pseudonym)
            after = _merge(before, clinical)
            changed = sorted(key for key in after if after.get(key) != before.get(key))
            if not changed:
                report.already_present += 1
                report.patients.append(PatientOutcome(number, "unchanged", stored.cohort))
                continue
            new_cohort = cohort if stored.cohort == "incomplete" else stored.cohort
            stored.clinical = vault.seal(after, associated=stored.pseudonym)
            stored.cohort, stored.source, stored.imported_at = new_cohort, source, datetime.now(timezone.utc)
            session.add(stored)
            report.updated += 1
            report.patients.append(PatientOutcome(number, "updated", new_cohort, [f"changed: {', '.join(changed)}"]))
        session.commit()
    return report
