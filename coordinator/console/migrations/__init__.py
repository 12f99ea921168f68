"""The operator console database's migrations (console.db: role tokens, sessions, action log and the runs it
launched). federation/migrations.py runs them."""

from __future__ import annotations

from pathlib import Path

from federation.migrations import Schema


def _tables():
    from coordinator.console.models import ConsoleRun
    from federation.web import models as web

    return [*web.TABLES, ConsoleRun.__table__]


CONSOLE_SCHEMA = Schema(name="console", scripts=Path(__file__).parent, tables=_tables, baseline="0001",
                        legacy_marker="web_access_token")
