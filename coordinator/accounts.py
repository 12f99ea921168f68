"""The end of a run: each hospital's epsilon as its node's own privacy account says (a StudyRun step, kept apart
for the length of coordinator/study_run.py).

A train reply lost after the node spent budget (its ClientApp died after the budget write, its connection
dropped) would leave the report at the epsilon of the last reply that arrived: issue 15 saw 1.63 in the
report for a node whose own account said 2.39. So at the end of a run the coordinator asks every node the
`identify` query with the study id, and the report shows what each node's account answers.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from flwr.app import ConfigRecord, MessageType, RecordDict

from federation import protocol

if TYPE_CHECKING:
    from coordinator.study_run import StudyRun

log = logging.getLogger("twinledger.coordinator")
ACCOUNT_TIMEOUT_S = 30.0  # at most this long, at the end of a run, for the nodes' own accounts


def settle_accounts(run: "StudyRun", node_ids: list[int]) -> None:
    """Set each hospital's `epsilon_spent` in `run`'s report from its node's own account; a node that gives none
    keeps its last reply's, and the report's message says so."""
    study = str(run.options.study_id)
    content = RecordDict({protocol.ROUND_CONFIG: ConfigRecord({"study-id": study})})
    settled = set()
    for reply in run._send(node_ids, f"{MessageType.QUERY}.identify", content, "account",
                           timeout_s=min(run.options.round_timeout_s, ACCOUNT_TIMEOUT_S)):
        identity = None if reply.has_error() else reply.content[protocol.USAGE]
        hospital = run.hospitals.get(reply.metadata.src_node_id)
        if hospital and identity and str(identity.get("study-id", "")) == study:
            epsilon = float(identity["epsilon-spent"])
            hospital.epsilon_spent = epsilon if math.isfinite(epsilon) else None  # None: a non-private study
            settled.add(reply.metadata.src_node_id)
    stale = sorted(h.name for node_id, h in run.hospitals.items() if node_id in node_ids and node_id not in settled)
    if stale:
        run.report.message = (f"the epsilon of {', '.join(stale)} is its last reply's: the node gave no account of "
                              "its own at the end of the run (its own may be higher)")
        log.warning("%s", run.report.message)
