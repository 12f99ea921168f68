"""The console's own table (besides federation.web's tokens, sessions and action log): the runs it launched."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from federation.web.models import now


class ConsoleRun(SQLModel, table=True):
    __tablename__ = "console_run"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)  # the report folder under <home>/runs/
    study_id: str  # 0x + 64 hex
    rounds: int
    launched_by: str
    launched_at: datetime = Field(default_factory=now)
    flwr_run_id: str | None = None  # Flower's run id (a uint64, beyond SQLite's INTEGER), from `flwr run`'s output
    stopped_by: str | None = None
    stopped_at: datetime | None = None


def create_tables(engine: Engine) -> None:
    """Create or upgrade console.db (its migrations, coordinator/console/migrations)."""
    from coordinator.console.migrations import CONSOLE_SCHEMA
    from federation.migrations import migrate

    migrate(engine, CONSOLE_SCHEMA)
