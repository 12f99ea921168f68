"""Alembic's entry point for node.db's migrations (federation/migrations.py passes the connection)."""

from alembic import context

from federation.migrations import run_env

run_env(context)
