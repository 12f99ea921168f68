"""Schema migrations (Alembic) for every database TwinLedger keeps, run on start and by `twinledger db upgrade`.

Each database has a folder of migration scripts shipped as package data: node/migrations (node.db: the node's
records, usage log and privacy account, the portal's tables and the IT console's) and
coordinator/console/migrations (console.db). `Schema` names one of them: its scripts, the tables it owns, and how
to recognise a database created with `create_all` before migrations existed.

    migrate(engine, schema)       bring the database to the latest revision; returns what was done
    differences(engine, schema)   what the models declare and the migrated database lacks (tests: must be empty)

A database from before migrations (the schema's tables present, no `alembic_version`) is brought up to the
baseline with the schema's own column fix-ups, its missing tables created, and stamped at the baseline: its rows
stay as they are. The scripts run Alembic's `env.py` from the folder, which calls `run_env` below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, Table, inspect
from sqlalchemy.engine import Connection, Engine

# Alembic says INFO twice per database open (its context, its DDL mode): noise in every command's output.
logging.getLogger("alembic").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Schema:
    """One database's migrations: `scripts` (the Alembic folder), `tables` (a function returning the model tables it
    owns: imported late, the models import this module's callers), `baseline` (the first revision, what a
    create_all database is stamped at) and `legacy_fixups` (what brings an old create_all database to the baseline:
    columns create_all never added)."""

    name: str
    scripts: Path
    tables: Callable[[], Sequence[Table]]
    baseline: str
    legacy_marker: str  # a table every create_all database of this kind has
    legacy_fixups: tuple[Callable[[Engine], None], ...] = field(default=())

    def metadata(self) -> MetaData:
        """A MetaData of exactly this database's tables (SQLModel's shared one holds every component's)."""
        metadata = MetaData()
        for table in self.tables():
            table.to_metadata(metadata)
        return metadata


@cache
def _script_directory(scripts: Path) -> ScriptDirectory:
    return ScriptDirectory(str(scripts))


def _config(schema: Schema, connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(schema.scripts))
    config.attributes["connection"] = connection
    config.attributes["target_metadata"] = schema.metadata()
    return config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head(schema: Schema) -> str:
    return _script_directory(schema.scripts).get_current_head()


def migrate(engine: Engine, schema: Schema) -> str:
    """Bring the database behind `engine` to the latest revision of `schema`. Returns what happened: "current",
    "created", "stamped and upgraded" (a create_all database from before migrations) or "upgraded"."""
    current = current_revision(engine)
    latest = head(schema)
    if current == latest:
        return "current"
    outcome = "upgraded"
    if current is None:
        if inspect(engine).has_table(schema.legacy_marker):
            _stamp_legacy(engine, schema)
            outcome = "stamped and upgraded"
        else:
            outcome = "created"
    try:
        with engine.begin() as connection:
            command.upgrade(_config(schema, connection), "head")
    except Exception:
        # Two processes starting on one new database (the portal and the IT console, say): the other one migrated.
        if current_revision(engine) == latest:
            return "current"
        raise
    return outcome


def _stamp_legacy(engine: Engine, schema: Schema) -> None:
    """A database create_all made: what it lacks of the baseline (columns, whole tables of a component that never
    ran) added, then recorded as at the baseline. Nothing is dropped or rewritten."""
    for fixup in schema.legacy_fixups:
        fixup(engine)
    schema.metadata().create_all(engine, checkfirst=True)
    with engine.begin() as connection:
        command.stamp(_config(schema, connection), schema.baseline)


def differences(engine: Engine, schema: Schema) -> list:
    """Alembic's autogenerate comparison of the models with the database: empty when no migration is missing."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, schema.metadata())


def run_env(context) -> None:
    """The body of every migrations folder's env.py: online migrations on the connection `migrate` passes (no
    engine of Alembic's own; no offline SQL scripts). SQLite alters tables in batch mode (copy and move)."""
    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with 'twinledger db upgrade --home HOME' (it opens the database)")
    context.configure(connection=connection, target_metadata=config.attributes.get("target_metadata"),
                      render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def new_revision(engine: Engine, schema: Schema, *, message: str, rev_id: str) -> None:
    """Write the next migration script of `schema` by comparing its models with `engine`'s database (migrated to
    the latest revision first); for developers who changed a model: review the script before committing it."""
    migrate(engine, schema)
    with engine.begin() as connection:
        command.revision(_config(schema, connection), message=message, autogenerate=True, rev_id=rev_id)
