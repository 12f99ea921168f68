"""What every record reader and the writer share: the error a refused file raises and the import's report."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_PROBLEMS_SHOWN = 20


class RecordFileError(ValueError):
    """The file cannot be imported; the message lists every problem with where it is."""


@dataclass
class ImportReport:
    source: str
    imported: int = 0
    incomplete: int = 0
    already_present: int = 0
    cohorts: dict[str, int] = field(default_factory=dict)


def problems_message(where: object, problems: list[str]) -> str:
    """`where: N problem(s), nothing imported:` and the first problems, one a line (all or nothing imports)."""
    shown = "\n  ".join(problems[:MAX_PROBLEMS_SHOWN])
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown += f"\n  … and {len(problems) - MAX_PROBLEMS_SHOWN} more"
    return f"{where}: {len(problems)} problem(s), nothing imported:\n  {shown}"
