"""What every record reader and the writer share: the error a refused file raises, what a reader returns
(`Records`: the records and what it skipped, with why) and the import's report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from federation.tasks.data_path import RecordFileError  # noqa: F401 (defined beside the tasks: their readers raise it)

MAX_PROBLEMS_SHOWN = 20


class Records(list):
    """(record number, clinical fields) in file order, as a reader found them, with what it did not read:

    - `skipped`: resources (or values) the task does not read, counted by kind ("Encounter", "DELETE request",
      "Observation 8867-4 (heart rate at rest, not the exercise maximum)", ...);
    - `rejected`: (patient, reason) for patients left out of an import that otherwise goes ahead;
    - `provenance`: record number -> field -> (resource id, code, time) of each stored value, and how many
      other measurements of it were not used (the rule: docs/fhir-mapping.md); a CSV's: the line;
    - `systems`: record number -> the identifier system it was read under ("" or absent: none given, the node's
      local record-number system);
    - `format`: "csv", "bundle", "ndjson" or "resource"."""

    def __init__(self, records=(), *, format: str = "csv"):
        super().__init__(records)
        self.format = format
        self.skipped: Counter = Counter()
        self.rejected: list[tuple[str, str]] = []
        self.provenance: dict[str, dict[str, dict]] = {}
        self.systems: dict[str, str] = {}


@dataclass
class PatientOutcome:
    record_number: str
    outcome: str  # "imported", "updated", "unchanged", "rejected"
    cohort: str | None = None
    reasons: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    source: str
    imported: int = 0
    incomplete: int = 0
    already_present: int = 0  # present with the same values: nothing to do
    cohorts: dict[str, int] = field(default_factory=dict)
    updated: int = 0  # present with new values: re-sealed, the change listed in `patients`
    rejected: int = 0  # left out, each with its reason in `patients`
    format: str = "csv"
    skipped: dict[str, int] = field(default_factory=dict)  # resources or values not read, by kind
    patients: list[PatientOutcome] = field(default_factory=list)
    provenance: dict[str, dict[str, dict]] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        skipped = sum(self.skipped.values())
        return (f"{self.imported} imported ({self.incomplete} incomplete), {self.updated} updated, "
                f"{self.already_present} unchanged, {self.rejected} rejected, {skipped} resources skipped")


def problems_message(where: object, problems: list[str]) -> str:
    """`where: N problem(s), nothing imported:` and the first problems, one a line (all or nothing imports)."""
    shown = "\n  ".join(problems[:MAX_PROBLEMS_SHOWN])
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown += f"\n  … and {len(problems) - MAX_PROBLEMS_SHOWN} more"
    return f"{where}: {len(problems)} problem(s), nothing imported:\n  {shown}"
