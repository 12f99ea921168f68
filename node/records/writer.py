"""The one writer of imported records: each new patient gets a random pseudonym, the clinical fields are sealed
(node/vault.py, AES-GCM bound to the pseudonym) and stored with the record kind and cohort (node/store.py), and
beside them (node/store.py PatientSource) the identifier system of the record number and each value's provenance,
sealed too (node/records/provenance.py).

A record number is a patient's across files when its identifier system is the same too: a FHIR identifier's
`system`; for a CSV, or an identifier without a system, the node's local record-number system (`record_system`).
A record number already in the store is never skipped silently (docs/node.md, "Importing records"):
- under another identifier system: a conflict (another numbering's patient), the patient rejected with the
  reason, nothing changed. A record stored before systems were kept takes the system of its next import;
- same kind, same values: `already_present` (unchanged);
- same kind, new values: updated in place (same pseudonym, re-sealed): the new file's values replace the stored
  ones field by field, a value the new file lacks (None) keeps the stored one (and its provenance); the changed
  field names are listed in the report. A train or test record keeps its cohort (a patient never moves between
  training and test); an incomplete one takes the cohort the new file's split gives it;
- another kind (a twins file naming a heart-disease record, or the reverse): a conflict, the patient rejected
  with the reason, the rest of the file imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from sqlmodel import select

from federation.ids import Pseudonym
from node.records import provenance
from node.records.base import ImportReport, PatientOutcome
from node.records.provenance import LOCAL_RECORD_SYSTEM
from node.store import Patient, PatientSource, Store
from node.vault import Vault


def _merge(stored: dict, new: dict) -> dict:
    merged = dict(stored)
    merged.update({key: value for key, value in new.items() if value is not None})
    return merged


def _in_chunks(session, model, column, keys: list[str]) -> list:
    found = []
    for at in range(0, len(keys), 500):  # bounded IN lists
        found += session.exec(select(model).where(column.in_(keys[at:at + 500])))
    return found


def write_records(store: Store, vault: Vault, records: Sequence[tuple[str, dict]], cohorts: Sequence[str], *,
                  kind: str, source: str, record_system: str = LOCAL_RECORD_SYSTEM) -> ImportReport:
    """Store (record number, clinical fields) pairs of one kind, each in its cohort, in one transaction."""
    found_provenance = getattr(records, "provenance", {})
    systems = getattr(records, "systems", {})
    persons = getattr(records, "persons", {})
    report = ImportReport(source=source, format=getattr(records, "format", "csv"),
                          skipped=dict(getattr(records, "skipped", {})), provenance=dict(found_provenance))
    for number, why in getattr(records, "rejected", []):
        report.rejected += 1
        report.patients.append(PatientOutcome(number, "rejected", reasons=[why]))
    with store.session() as session:
        existing = {p.record_number: p for p in _in_chunks(session, Patient, Patient.record_number,
                                                           [number for number, _ in records])}
        sources = {s.pseudonym: s for s in _in_chunks(session, PatientSource, PatientSource.pseudonym,
                                                      [p.pseudonym for p in existing.values()])}
        new_sources = []
        for (number, clinical), cohort in zip(records, cohorts, strict=True):
            stored = existing.get(number)
            system = systems.get(number) or record_system
            given = found_provenance.get(number, {})
            if stored is None:
                pseudonym = str(Pseudonym.new())
                session.add(Patient(record_number=number, pseudonym=pseudonym, cohort=cohort, kind=kind, source=source,
                                    clinical=vault.seal(clinical, associated=pseudonym),
                                    person=persons.get(number) or provenance.person_key(system, number)))
                new_sources.append(PatientSource(
                    pseudonym=pseudonym, identifier_system=system,
                    provenance=provenance.seal(vault, provenance.merge({}, given, clinical, source=source),
                                               pseudonym=pseudonym)))
                report.imported += 1
                report.incomplete += cohort == "incomplete"
                report.cohorts[cohort] = report.cohorts.get(cohort, 0) + 1
                report.patients.append(PatientOutcome(number, "imported", cohort))
                continue
            row = sources.get(stored.pseudonym)
            if row is not None and row.identifier_system != system:
                report.rejected += 1
                report.patients.append(PatientOutcome(number, "rejected", stored.cohort, [
                    f"record number {number!r} is stored under the identifier system {row.identifier_system} "
                    f"(from {stored.source}); this file gives it under {system}: another numbering's patient, "
                    "nothing changed (a CSV's numbers are the node's record-number-system)"]))
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
            if row is None:  # stored before sources were kept: it takes this import's system and provenance
                row = PatientSource(pseudonym=stored.pseudonym, identifier_system=system)
                session.add(row)
            if not changed:
                if row.provenance is None:
                    row.provenance = provenance.seal(vault, provenance.merge({}, given, clinical, source=source),
                                                     pseudonym=stored.pseudonym)
                report.already_present += 1
                report.patients.append(PatientOutcome(number, "unchanged", stored.cohort))
                continue
            new_cohort = cohort if stored.cohort == "incomplete" else stored.cohort
            stored.clinical = vault.seal(after, associated=stored.pseudonym)
            stored.cohort, stored.source, stored.imported_at = new_cohort, source, datetime.now(timezone.utc)
            session.add(stored)
            kept = provenance.open_sealed(vault, row.provenance, pseudonym=stored.pseudonym)
            row.provenance = provenance.seal(vault, provenance.merge(kept, given, clinical, source=source),
                                             pseudonym=stored.pseudonym)
            row.updated_at = stored.imported_at
            session.add(row)
            report.updated += 1
            report.patients.append(PatientOutcome(number, "updated", new_cohort, [f"changed: {', '.join(changed)}"]))
        session.flush()  # the patients first: their sources refer to them
        session.add_all(new_sources)
        session.commit()
    return report
