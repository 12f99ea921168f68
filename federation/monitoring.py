"""TwinLedger's Prometheus metrics, defined once (prometheus-client), and the text a `/metrics` scrape gets.

    twinledger_rounds_total{outcome}            coordinator: rounds completed (anchored) or failed
    twinledger_refusals_total{code,name}        node: requests refused, by protocol code (federation/protocol.py)
    twinledger_epsilon_spent{study}             node: epsilon its own privacy account spent on a study
    twinledger_consent_read_seconds             node: consent reads of a round's candidates (histogram; _count
                                                is the number of reads)
    twinledger_relays_pending                   portal: signed consent changes in the outbox, not yet on chain

The code that does the work calls the hooks below in one line (`monitoring.refused(code)`,
`@monitoring.consent_read()`, `monitoring.epsilon_spent(...)`, `monitoring.round_ended(...)`,
`monitoring.relays_pending(...)`); the module is not called `metrics`, the name of the models' metrics
everywhere else (a local `metrics` would hide it). Each web service answers `/metrics`
(federation/web/probes.py) with `exposition()`.

The ClientApp runs inside the SuperNode's process and the ServerApp inside a process the SuperLink starts:
neither serves HTTP. Their metrics reach a scrape through prometheus-client's multiprocess mode: when
PROMETHEUS_MULTIPROC_DIR names a directory in a process's environment (set it for every process of one side,
on a volume they share), each process writes its values there, and any web service of that side, given the same
variable, exposes the whole directory's sum (docs/operations.md). Without it, each process keeps its own.
"""

from __future__ import annotations

import math
import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

SHARED_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
if _shared := os.environ.get(SHARED_DIR_ENV):
    os.makedirs(_shared, exist_ok=True)  # the first value written needs it

ROUNDS = Counter("twinledger_rounds", "Rounds the coordinator ran: completed (anchored on chain) or failed (not "
                 "anchored, or the run stopped)", ["outcome"])
REFUSALS = Counter("twinledger_refusals", "Requests this node refused (no data used), by protocol code",
                   ["code", "name"])
EPSILON_SPENT = Gauge("twinledger_epsilon_spent", "Epsilon this node's own privacy account has spent on a study",
                      ["study"], multiprocess_mode="mostrecent")
CONSENT_READ_SECONDS = Histogram("twinledger_consent_read_seconds", "Consent reads of a round's candidates from the "
                                 "chain (count) and how long each took",
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
RELAYS_PENDING = Gauge("twinledger_relays_pending", "Signed consent changes in the portal's outbox, not yet "
                       "recorded on chain", multiprocess_mode="livemax")


def refused(code: int) -> None:
    from federation.protocol import ERROR_NAMES

    REFUSALS.labels(code=str(code), name=ERROR_NAMES.get(code, "unknown")).inc()


def consent_read():
    """Times one consent read: a decorator (or a `with` block)."""
    return CONSENT_READ_SECONDS.time()


def epsilon_spent(study, epsilon: float) -> None:
    """A non-private study's infinite epsilon is not a number a gauge can hold: it is left out."""
    if math.isfinite(epsilon):
        EPSILON_SPENT.labels(study=str(study)).set(epsilon)


def round_ended(*, completed: bool) -> None:
    ROUNDS.labels(outcome="completed" if completed else "failed").inc()


def relays_pending(count: int) -> None:
    RELAYS_PENDING.set(count)


def exposition() -> tuple[bytes, str]:
    """What a scrape gets, and its content type: this process's metrics, or with PROMETHEUS_MULTIPROC_DIR the
    sum over every process that wrote to that directory."""
    if os.environ.get(SHARED_DIR_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
