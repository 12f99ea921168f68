"""The one writer of imported records: each new patient gets a random pseudonym, the clinical fields are sealed
(node/vault.py, AES-GCM bound to the pseudonym) and stored with the record kind and cohort (node/store.py).

Record numbers already in the store are skipped and counted, never overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import select

from federation.ids import Pseudonym
from node.records.base import ImportReport
from node.store import Patient, Store
from node.vault import Vault


def write_records(store: Store, vault: Vault, records: Sequence[tuple[str, dict]], cohorts: Sequence[str], *,
                  kind: str, source: str) -> ImportReport:
    """Store (record number, clinical fields) pairs of one kind, each in its cohort, in one transaction."""
    report = ImportReport(source=source)
    with store.session() as session:
        existing = set(session.exec(select(Patient.record_number)))
        for (number, clinical), cohort in zip(records, cohorts, strict=True):
            if number in existing:
                report.already_present += 1
                continue
            pseudonym = str(Pseudonym.new())
            session.add(Patient(record_number=number, pseudonym=pseudonym, cohort=cohort, kind=kind, source=source,
                                clinical=vault.seal(clinical, associated=pseudonym)))
            report.imported += 1
            report.incomplete += cohort == "incomplete"
            report.cohorts[cohort] = report.cohorts.get(cohort, 0) + 1
        session.commit()
    return report
