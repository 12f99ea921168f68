"""Hospital IT's bulk work on patients: enrolling many on chain (`twinledger node enrol`), with a progress line and
a per-patient report. The enrolment itself is node.admin.enrol_patients, the one the portal uses.

Bulk consent import is node/consent_import.py; erasure node/erase.py.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from eth_utils import is_address, to_checksum_address

from contracts.ledger import ContractRejected, Ledger, LedgerError
from contracts.ledger.consent import ENROL_BATCH
from federation.ids import Pseudonym
from node import admin
from node.settings import NodeSettings
from node.store import Patient, Store


class BulkFileError(ValueError):
    """A bulk input file the command cannot read: the message names the file and the line."""


@dataclass
class Outcome:
    """What happened to one patient (or one line of a file)."""

    patient: str
    outcome: str  # enrol: "enrolled", "already enrolled", "failed"
    reason: str = ""


class Progress:
    """A readable progress line on stderr: rewritten in place on a terminal, one line per step otherwise."""

    def __init__(self, label: str, total: int, *, out: TextIO | None = None):
        self.label, self.total, self.done = label, total, 0
        self.out = out if out is not None else sys.stderr
        self._tty = getattr(self.out, "isatty", lambda: False)()

    def advance(self, count: int) -> None:
        self.done += count
        percent = 100 * self.done // self.total if self.total else 100
        start, end = ("\r", "") if self._tty else ("", "\n")
        self.out.write(f"{start}{self.label}: {self.done}/{self.total} ({percent} %){end}")
        self.out.flush()

    def close(self) -> None:
        if self._tty:
            self.out.write("\n")


def read_consent_addresses(path: Path) -> dict[str, str]:
    """`record_number,consent_address` CSV (a header row; the patients' own consent addresses, from their
    wallets or another system) as {record number: checksummed address}."""
    try:
        with Path(path).open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise BulkFileError(f"{path}: cannot read it ({exc})") from exc
    if not rows or [c.strip().lower() for c in rows[0]] != ["record_number", "consent_address"]:
        raise BulkFileError(f"{path} line 1: the header must be 'record_number,consent_address'")
    addresses: dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or not row[0].strip() or not is_address(row[1].strip()):
            raise BulkFileError(f"{path} line {number}: expected a record number and a 0x consent address, "
                                f"got {','.join(row)[:80]!r}")
        if row[0].strip() in addresses:
            raise BulkFileError(f"{path} line {number}: record number {row[0].strip()} is listed twice")
        addresses[row[0].strip()] = to_checksum_address(row[1].strip())
    return addresses


def enrol(settings: NodeSettings, ledger: Ledger, consent_addresses: dict[str, str], numbers: list[str] | None = None,
          *, batch: int = ENROL_BATCH, progress: Progress | None = None) -> list[Outcome]:
    """Enrol the imported patients `numbers` (default: every imported patient) with their consent addresses, in
    batches; a batch the registry refuses is sent again one patient at a time, so that a refused patient fails
    alone. Idempotent: a patient enrolled before (here, or on chain by this hospital with the same key after a
    run that stopped) reads "already enrolled"."""
    patients = {p.record_number: p for p in Store(settings.resolved_database_url).patients()}
    outcomes: list[Outcome] = []
    todo: dict[str, str] = {}
    for number in (list(patients) if numbers is None else numbers):
        patient = patients.get(number)
        if patient is None:
            outcomes.append(Outcome(number, "failed", "unknown patient (no imported record has this number)"))
        elif patient.consent_key is not None:
            outcomes.append(Outcome(number, "already enrolled"))
        elif number not in consent_addresses:
            outcomes.append(Outcome(number, "failed", "no consent address for this patient in the address file"))
        else:
            todo[number] = consent_addresses[number]
    progress = progress or Progress("enrolling", len(todo))
    progress.total = len(todo)
    pending = list(todo.items())
    for start in range(0, len(pending), batch):
        chunk = dict(pending[start:start + batch])
        outcomes += _enrol_batch(settings, ledger, chunk, patients)
        progress.advance(len(chunk))
    progress.close()
    return outcomes


def _enrol_batch(settings: NodeSettings, ledger: Ledger, chunk: dict[str, str], patients: dict[str, Patient]
                 ) -> list[Outcome]:
    try:
        admin.enrol_patients(settings, ledger, chunk)
        return [Outcome(number, "enrolled") for number in chunk]
    except ContractRejected as exc:
        if len(chunk) > 1:
            return [o for number, key in chunk.items()
                    for o in _enrol_batch(settings, ledger, {number: key}, patients)]
        [(number, key)] = chunk.items()
        if exc.error_name == "AlreadyEnrolled" and _enrolled_here(ledger, patients[number], key):
            _remember_key(settings, number, key)  # an earlier run enrolled it and stopped before writing it down
            return [Outcome(number, "already enrolled")]
        return [Outcome(number, "failed", str(exc))]
    except LedgerError as exc:  # no chain, no receipt: the next run tries again
        return [Outcome(number, "failed", f"{type(exc).__name__}: {exc}") for number in chunk]


def _enrolled_here(ledger: Ledger, patient: Patient, key: str) -> bool:
    pseudonym = Pseudonym.parse(patient.pseudonym)
    by = ledger.consent.functions.enrolledBy(pseudonym).call()
    return by == ledger.address and ledger.consent.functions.patientOf(pseudonym).call()[0] == key


def _remember_key(settings: NodeSettings, number: str, key: str) -> None:
    from sqlmodel import select

    with Store(settings.resolved_database_url).session() as session:
        patient = session.exec(select(Patient).where(Patient.record_number == number)).one()
        patient.consent_key = key
        session.add(patient)
        session.commit()


def write_report(outcomes: list, path: Path, fields: tuple[str, ...]) -> Path:
    """The per-patient report as CSV (owner-only: it names record numbers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        for outcome in outcomes:
            writer.writerow([getattr(outcome, name) if getattr(outcome, name) is not None else ""
                             for name in fields])
    path.chmod(0o600)
    return path


def summary(outcomes: list) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
    return ", ".join(f"{count} {name}" for name, count in counts.items()) or "nothing to do"
