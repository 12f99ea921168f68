"""The node database's migrations (node.db: the node's records, usage log and privacy account, the portal's
tables and the IT console's tokens, sessions and action log). federation/migrations.py runs them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect

from federation.migrations import Schema


def _tables():
    from federation.web import models as web
    from node import store
    from node.portal import models as portal

    own = [store.Patient, store.PatientSource, store.RoundUsage, store.PrivacySpend, store.RoundRefusal,
           store.EvaluationPlan]
    portal_tables = [portal.PortalAccount, portal.EnrolmentCode, portal.PortalSession, portal.DeviceCookie,
                     portal.LoginFailure, portal.ConsentRelay]
    return [m.__table__ for m in own + portal_tables] + list(web.TABLES)


def _store_columns(engine) -> None:
    from node import store

    store._add_kind_column(engine)
    store._add_release_columns(engine)
    store._add_usage_status_column(engine)


def _portal_columns(engine) -> None:
    from node.portal.models import upgrade

    if inspect(engine).has_table("portalaccount"):
        upgrade(engine)


NODE_SCHEMA = Schema(name="node", scripts=Path(__file__).parent, tables=_tables, baseline="0001",
                     legacy_marker="patient", legacy_fixups=(_store_columns, _portal_columns))
