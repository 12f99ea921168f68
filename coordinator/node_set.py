"""Which nodes take part in each round of a run (a StudyRun part, kept apart for the length of study_run.py).

Issue 15 saw a fixed node set: a node that died or hung was sent every later message and waited for, counted
toward `min-nodes`, and a restarted SuperNode (a new Flower node id) never rejoined. Here the set is taken
again before every round:

- the nodes the SuperLink lists as connected (`grid.get_node_ids()`: it drops a node whose heartbeat stops);
- a node id not seen before (a new or restarted SuperNode) is authenticated (its hospital from the node key it
  authenticated with, as at the start of the run) and asked to identify itself; a restarted hospital keeps its
  place in the report (the same HospitalSummary, by account or name);
- a node that gave no reply within a phase's deadline (hung, or its reply lost) is sent nothing more in that
  round, and must answer an `identify` query (REJOIN_TIMEOUT_S) before it is sent a round again;
- dead and hung nodes are not counted: if fewer than `round-min-nodes` hospitals are left (after waiting
  `wait-for-nodes-s` for nodes to come back), the run ends (`NotEnoughNodes`) with a report naming the hospitals
  missing and why. (`min-nodes` is what the run waits for before round 1.)

A reply still counts only for the hospital whose node key authenticated the node (`hospital_of`, checked by
coordinator/replies.py); re-identifying a node never changes that binding.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from flwr.app import MessageType, RecordDict

from coordinator.admission import fingerprint
from coordinator.report import HospitalSummary
from federation import protocol

if TYPE_CHECKING:
    from coordinator.study_run import StudyRun

log = logging.getLogger("twinledger.coordinator")
REJOIN_TIMEOUT_S = 15.0  # at most this long, before a round, for a new or silent node's identify reply
# A round's deadline is round-timeout-s after it pinned its block: training must end by this share of it, so
# that evaluation has the rest (a hung node in training no longer makes a round twice the timeout).
TRAIN_SHARE = 0.75


# Flower's answers for a node that is not there: its message expired undelivered, its reply is gone, or the
# SuperLink lost its heartbeat (flwr.common.constant.ErrorCode 3, 4, 5). Such a node counts as silent.
ABSENT_ERRORS = (3, 4, 5)


def is_absent(reply) -> bool:
    return reply.has_error() and reply.error.code in ABSENT_ERRORS


class NotEnoughNodes(RuntimeError):
    """Fewer hospitals than `min-nodes` can take part: the run ends here, its report naming who is missing."""


def phase_deadline(*, started: float, round_timeout_s: float, message_type: str) -> float:
    """The monotonic time by which a round's phase must have its replies: training by TRAIN_SHARE of the
    round's timeout, evaluation (and anything else in the round) by the whole of it."""
    share = TRAIN_SHARE if message_type == MessageType.TRAIN else 1.0
    return started + share * round_timeout_s


class NodeSet:
    def __init__(self, run: "StudyRun"):
        self.run = run
        self.seen: set[int] = set()  # every node id authenticated so far (admitted or not)
        self.members: set[int] = set()  # the nodes of the start, and those that identified themselves since
        self.silent: dict[int, str] = {}  # node id -> why it must identify again before its next round

    # ---- the start of the run ----

    def start(self) -> list[int]:
        """Wait for `min-nodes` nodes, learn their hospitals, ask them who they are; the nodes to work with."""
        node_ids = self._authenticate(self._wait_for_nodes())
        self._identify(node_ids, timeout_s=self.run.options.round_timeout_s)
        self.members.update(node_ids)
        return node_ids

    def _wait_for_nodes(self) -> list[int]:
        options = self.run.options
        deadline = time.monotonic() + options.wait_for_nodes_s
        while True:
            node_ids = sorted(self.run.grid.get_node_ids())
            if len(node_ids) >= options.min_nodes or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        if len(node_ids) < options.min_nodes:
            raise NotEnoughNodes(f"only {len(node_ids)} node(s) connected after {options.wait_for_nodes_s:g} s; "
                                 f"{options.min_nodes} needed")
        return node_ids

    def _authenticate(self, node_ids: list[int]) -> list[int]:
        """Learn each new node's hospital from the key it authenticated with; returns the nodes to work with.

        A node's hospital is the one whose node key on chain has the fingerprint of the node's key (Flower's
        `NodeInfo.public_key`). When at least one node is bound so, the others are sent nothing; when none is
        (no keys from the Grid, or none recorded on chain), every node takes part and its replies count only
        under the hospital that signed them.
        """
        run = self.run
        new = [n for n in node_ids if n not in self.seen]
        if new:
            keys = {info.node_id: bytes(info.public_key) for info in run.grid.get_nodes()
                    if info.node_id in new and info.public_key}
            for node_id, pem in keys.items():
                try:
                    account = run.ledger.hospital_by_node_id(fingerprint(pem))
                except ValueError:  # not a key the chain could hold
                    account = None
                if account is not None:
                    run.hospital_of[node_id] = account
            if keys and not run.hospital_of and not self.seen:
                log.warning("no node authenticated with a hospital's node key on chain: replies count only under "
                            "the hospital that signed them")
            self.seen.update(new)
        if not run.hospital_of:
            return node_ids
        for node_id in sorted(set(new) - set(run.hospital_of)):
            name = f"node {node_id}"
            run.excluded[name] = ("not admitted: the key it authenticated with is no hospital's node key on chain; "
                                  "nothing was sent to it")
            log.warning("%s: %s", name, run.excluded[name])
        return sorted(n for n in node_ids if n in run.hospital_of)

    def _identify(self, node_ids: list[int], *, timeout_s: float, connected: list[int] = ()) -> list[int]:
        """Each node's name and patient count, for the report; returns the nodes that answered. The account a
        node names is a claim: the report shows the account its key is bound to on chain, or (without keys)
        the signer of its first verified reply."""
        run = self.run
        answered = []
        for reply in run._send(node_ids, f"{MessageType.QUERY}.identify", RecordDict(), "identify",
                               timeout_s=timeout_s):
            node_id = reply.metadata.src_node_id
            if reply.has_error():
                log.warning("%s could not identify itself: %s", run._name(node_id), reply.error.reason)
                continue
            answered.append(node_id)
            identity = reply.content[protocol.USAGE]
            authenticated = run.hospital_of.get(node_id)
            if authenticated and str(identity["account"]) != authenticated:
                log.warning("%s says it is hospital %s but authenticated as hospital %s's node",
                            run._name(node_id), identity["account"], authenticated)
            name = str(identity["hospital"])
            # A hospital whose node is no longer connected, by its authenticated account (or, without keys, by name).
            known = next((h for n, h in run.hospitals.items() if n not in connected and n != node_id
                          and (h.account == authenticated if authenticated else h.name == name)), None)
            if known is not None:  # a restarted SuperNode: a new node id, the same hospital
                for old in [n for n, h in run.hospitals.items() if h is known and n != node_id]:
                    del run.hospitals[old]
                known.patients = int(identity["patients"])
                run.hospitals[node_id] = known
            else:
                run.hospitals[node_id] = HospitalSummary(
                    name=name, account=authenticated, patients=int(identity["patients"]),
                    epsilon_budget=run.terms.epsilon_budget)
        run.report.hospitals = sorted({id(h): h for h in run.hospitals.values()}.values(), key=lambda h: h.name)
        log.info("hospitals in this run: %s", ", ".join(h.name for h in run.report.hospitals))
        return answered

    # ---- before each round ----

    def for_round(self, round_number: int) -> list[int]:
        """The nodes to send round `round_number` to: connected, admitted, identified, and answering; raises
        NotEnoughNodes when fewer than `round-min-nodes` are left."""
        run = self.run
        # Too few: wait for nodes to come back (a SuperNode restarting) as long as the run waits for nodes to start.
        deadline = time.monotonic() + run.options.wait_for_nodes_s
        while True:
            connected = self._authenticate(sorted(run.grid.get_node_ids()))
            ask = [n for n in connected if n not in self.members or n in self.silent]
            if ask:
                timeout_s = min(REJOIN_TIMEOUT_S, run.options.round_timeout_s)
                for node_id in self._identify(ask, timeout_s=timeout_s, connected=connected):
                    self.silent.pop(node_id, None)
                    self.members.add(node_id)
                    log.info("%s takes part from round %d", run._name(node_id), round_number)
            ready = [n for n in connected if n in self.members and n not in self.silent]
            if len(ready) >= run.options.round_min_nodes or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        self._note_absent(ready, connected)
        if len(ready) < run.options.round_min_nodes:
            raise NotEnoughNodes(self._missing_message(round_number, ready, connected))
        return ready

    def mark_silent(self, node_ids, *, phase: str, round_number: int) -> None:
        """Nodes that gave no reply to `phase`: sent nothing more this round, and asked to identify again before
        the next."""
        for node_id in node_ids:
            self.silent[node_id] = f"no reply to {phase} in round {round_number}"

    def _note_absent(self, ready: list[int], connected: list[int]) -> None:
        """Each hospital of the run that is not in this round, with why, in the round's errors (`excluded` is
        added to every round's); a hospital back in the round is taken off."""
        run = self.run
        present = {run._name(n) for n in ready}
        for hospital in run.report.hospitals:
            key = hospital.name
            if key in present:
                run.excluded.pop(key, None)
            else:
                run.excluded[key] = f"not in this round: {self._why_absent(hospital, connected)}"

    def _why_absent(self, hospital: HospitalSummary, connected: list[int]) -> str:
        node_ids = [n for n, h in self.run.hospitals.items() if h is hospital]
        why = next((self.silent[n] for n in node_ids if n in self.silent), None)
        if why is not None:
            return f"{why}, and none to identify since"
        return "no reply to identify" if any(n in connected for n in node_ids) else \
            "node unavailable: its SuperNode is not connected"

    def _missing_message(self, round_number: int, ready: list[int], connected: list[int]) -> str:
        run = self.run
        present = {run._name(n) for n in ready}
        missing = []
        for hospital in run.report.hospitals:
            if hospital.name not in present:
                missing.append(f"{hospital.name} ({self._why_absent(hospital, connected)})")
        return (f"round {round_number} cannot start: {len(ready)} hospital(s) can take part "
                f"({', '.join(sorted(present)) or 'none'}), round-min-nodes is {run.options.round_min_nodes}; missing: "
                f"{', '.join(missing) or 'none'}. The run ends here; rounds already anchored stay on chain")
