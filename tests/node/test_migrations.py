"""Schema migrations (federation/migrations.py): every database is created by its migrations, upgraded on start,
recognised and stamped when create_all made it before migrations, and its models agree with the latest migration."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text

from coordinator.console.migrations import CONSOLE_SCHEMA
from federation.migrations import current_revision, differences, head, migrate
from node.migrations import NODE_SCHEMA
from node.store import Patient, Store

SCHEMAS = [NODE_SCHEMA, CONSOLE_SCHEMA]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.name)
def test_a_new_database_is_created_by_the_migrations_and_agrees_with_the_models(schema, tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'new.db'}")
    assert migrate(engine, schema) == "created"
    assert current_revision(engine) == head(schema)
    # Nobody forgot a migration: what the models declare and what the migrations made are the same.
    assert differences(engine, schema) == []
    assert migrate(engine, schema) == "current"


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.name)
def test_a_database_at_the_baseline_upgrades_to_the_latest_revision(schema, tmp_path):
    from alembic import command

    from federation.migrations import _config

    engine = create_engine(f"sqlite:///{tmp_path / 'baseline.db'}")
    with engine.begin() as connection:
        command.upgrade(_config(schema, connection), schema.baseline)
    assert current_revision(engine) == schema.baseline
    migrate(engine, schema)
    assert current_revision(engine) == head(schema)
    assert differences(engine, schema) == []


def test_an_old_create_all_node_database_is_stamped_and_keeps_its_rows(tmp_path):
    """A node.db as the code before migrations made it (create_all, then columns added by hand over the issues;
    here the oldest shape: no kind, no release, no usage status, no portal tables)."""
    path = tmp_path / "node.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text(
            "CREATE TABLE patient (id INTEGER PRIMARY KEY, record_number VARCHAR NOT NULL UNIQUE, pseudonym VARCHAR "
            "NOT NULL UNIQUE, consent_key VARCHAR, cohort VARCHAR NOT NULL, source VARCHAR NOT NULL, clinical BLOB "
            "NOT NULL, imported_at DATETIME NOT NULL)"))
        connection.execute(text(
            "INSERT INTO patient (record_number, pseudonym, cohort, source, clinical, imported_at) "
            "VALUES ('H1-1', '0x01', 'train', 'csv', x'00', '2026-01-01 00:00:00')"))
        connection.execute(text(
            "CREATE TABLE privacyspend (id INTEGER PRIMARY KEY, study_id VARCHAR NOT NULL, round INTEGER NOT NULL, "
            "noise_multiplier FLOAT NOT NULL, sample_rate FLOAT NOT NULL, steps INTEGER NOT NULL, delta FLOAT NOT "
            "NULL, epsilon_after FLOAT NOT NULL, recorded_at DATETIME NOT NULL)"))
        connection.execute(text(
            "INSERT INTO privacyspend (study_id, round, noise_multiplier, sample_rate, steps, delta, epsilon_after, "
            "recorded_at) VALUES ('0xab', 1, 1.1, 0.1, 10, 1e-5, 0.7, '2026-01-01 00:00:00')"))
        connection.execute(text(
            "CREATE TABLE roundusage (id INTEGER PRIMARY KEY, study_id VARCHAR NOT NULL, round INTEGER NOT NULL, "
            "phase VARCHAR NOT NULL, block INTEGER NOT NULL, commitment VARCHAR NOT NULL, pseudonyms VARCHAR NOT "
            "NULL, recorded_at DATETIME NOT NULL)"))
    engine.dispose()

    store = Store(f"sqlite:///{path}")  # what every node process does on start

    assert current_revision(store.engine) == head(NODE_SCHEMA)
    (patient,) = store.patients()
    assert isinstance(patient, Patient) and patient.record_number == "H1-1" and patient.kind == "heart-disease"
    (spend,) = store.spends("0xab")
    assert spend.epsilon_after == 0.7 and spend.release == "train"
    assert inspect(store.engine).has_table("portalaccount") and inspect(store.engine).has_table("web_access_token")


def test_an_old_create_all_console_database_is_stamped_and_keeps_its_tokens(tmp_path):
    from sqlmodel import Session, SQLModel, select

    from coordinator.console.models import ConsoleRun, create_tables
    from federation.web.models import TABLES, AccessToken

    engine = create_engine(f"sqlite:///{tmp_path / 'console.db'}")
    SQLModel.metadata.create_all(engine, tables=[*TABLES, ConsoleRun.__table__])  # the code before migrations
    with Session(engine) as db:
        db.add(AccessToken(name="alice", role="operator", token_hash="00" * 32))
        db.commit()

    create_tables(engine)  # the console's start

    assert current_revision(engine) == head(CONSOLE_SCHEMA)
    with Session(engine) as db:
        assert [t.name for t in db.exec(select(AccessToken))] == ["alice"]


def test_the_migrate_commands_upgrade_a_node_home_and_a_console_home(tmp_path, capsys):
    from deploy import cli

    assert cli.main(["node", "init", "--home", str(tmp_path / "node"), "--hospital", "h1", "--plaintext-key"]) == 0
    assert cli.main(["node", "migrate", "--home", str(tmp_path / "node")]) == 0
    assert f"node.db: current (revision {head(NODE_SCHEMA)})" in capsys.readouterr().out
    from coordinator.settings import CoordinatorSettings

    CoordinatorSettings(home=tmp_path / "console", rpc_url="http://unused.invalid").save()
    assert cli.main(["console", "migrate", "--home", str(tmp_path / "console")]) == 0
    assert "console.db: created (revision 0001)" in capsys.readouterr().out
