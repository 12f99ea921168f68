"""A hospital's SuperNode restarted after a crash takes its place again at once (issue 15: "a restarted SuperNode
rejoins at the next round").

With node authentication a hospital's node keeps its Flower node id across restarts (the SuperLink binds the id
to the node key). A killed SuperNode never signs off, so flwr 1.41's SuperLink holds its session "online" until
its heartbeat lapses (twice the heartbeat interval) and refuses to activate the restarted process (code 2004):
the hospital missed every round until then. Two changes, both in the warm SuperNode's process (node/supernode.py):

- **replace the dead session.** The SuperNode remembers the node id the SuperLink gave its key
  (`flower-node-ids.json` beside the key, by SuperLink address). Refused, it deactivates that node id and
  activates again. The deactivation is an ordinary Fleet call signed with the node's key, and the SuperLink's
  node authentication accepts it only when the key is the one bound to that node id
  (flwr/superlink/routers/fleet/node_auth.py: "Invalid node ID", HTTP 401): only the holder of a hospital's node
  key can end that node's session; another node, admitted or not, cannot (tests/faults/test_federation_faults.py).
- **start again when still refused** (no remembered id, or the deactivation refused): the old behaviour, a fresh
  process REJOIN_WAIT_S later, with a shorter heartbeat so that the session lapses in 20 s rather than 60 s.

Two processes run with the same node key would take the session from each other: a node key belongs to one
SuperNode (docs/operations.md).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from federation.files import write_atomically

log = logging.getLogger("twinledger.supernode")

HEARTBEAT_S = 10.0  # flwr 1.41: 30; the SuperLink holds a silent node "online" for twice this
REJOIN_WAIT_S = 5.0  # between a refused activation and the next try
ACTIVATION_REFUSED = 2004  # flwr.supercore.error.ApiErrorCode.FLEET_NODE_ACTIVATION_FAILED
NODE_IDS_FILE = "flower-node-ids.json"


class ActivationRefused(Exception):
    """The SuperLink refused to activate this node: it still holds the session of this node's previous process
    (killed, so it never signed off) until that session's heartbeat lapses."""


def node_ids_file(flower_args: list[str]) -> tuple[Path, str] | None:
    """(the file that remembers this node's ids, the SuperLink's address) from flower-supernode's arguments;
    None without node authentication (a node without a key registers a new id every time)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--superlink", default="127.0.0.1:9092")
    parser.add_argument("--auth-supernode-private-key")
    args, _ = parser.parse_known_args(flower_args)
    if not args.auth_supernode_private_key:
        return None
    return Path(args.auth_supernode_private_key).expanduser().resolve().parent / NODE_IDS_FILE, args.superlink


def remembered_node_id(path: Path, superlink: str) -> int | None:
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))[superlink])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_node_id(path: Path, superlink: str, node_id: int) -> None:
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
        ids = ids if isinstance(ids, dict) else {}
    except (OSError, ValueError):
        ids = {}
    if ids.get(superlink) == node_id:
        return
    ids[superlink] = node_id
    write_atomically(path, json.dumps(ids).encode())


def refusal_code(exc: Exception) -> int | None:
    """The Flower error code of a refused Fleet call, None for anything else."""
    import httpx
    from flwr.supercore.error import FlowerError

    if not isinstance(exc, httpx.HTTPStatusError):
        return None
    error = FlowerError.from_json(exc.response.text)
    return int(error.code) if error is not None else None


def replace_stale_session(path: Path, superlink: str) -> bool:
    """Make flwr's SuperNode, refused activation because its key's node id is still "online", end that session
    (a deactivation signed with the same key) and activate again; remember the id of every activation."""
    import flwr
    import httpx
    from flwr.proto.fleet_pb2 import DeactivateNodeRequest  # pylint: disable=E0611
    from flwr.supernode.fleet_http_client import FleetHttpClient

    if not flwr.__version__.startswith("1.41.") or getattr(FleetHttpClient, "_twinledger_rejoin", False):
        return False
    activate = FleetHttpClient.ActivateNode

    def activate_replacing(self, request):
        try:
            response = activate(self, request)
        except httpx.HTTPStatusError as refused:
            node_id = remembered_node_id(path, superlink)
            if refusal_code(refused) != ACTIVATION_REFUSED or node_id is None:
                raise
            try:
                self.DeactivateNode(DeactivateNodeRequest(node_id=node_id))
            except httpx.HTTPError as exc:  # not this key's node id (a new SuperLink): start again later
                log.warning("could not end this node's earlier session (node id %d): %s", node_id, exc)
                raise refused from exc
            log.warning("ended this node's earlier session (node id %d, a process that stopped without signing "
                        "off): activating again", node_id)
            response = activate(self, request)
        remember_node_id(path, superlink, response.node_id)
        return response

    FleetHttpClient.ActivateNode = activate_replacing
    FleetHttpClient._twinledger_rejoin = True
    return True


def rejoin_after_a_crash(heartbeat_s: float) -> bool:
    """A SuperNode still refused after `replace_stale_session` rejoins: flwr 1.41's SuperNode exits when the
    SuperLink refuses to activate it (code 2004); here that raises ActivationRefused, which node/supernode.py's
    `main` answers by starting again a moment later. A shorter heartbeat also lets the SuperLink tell a dead or
    hung node sooner (20 s rather than 60 s)."""
    import flwr
    from flwr.supercore import heartbeat
    from flwr.supercore.exit import ExitCode
    from flwr.supernode import fleet_http_connection as fleet

    if not flwr.__version__.startswith("1.41.") or not hasattr(fleet, "flwr_exit"):
        log.warning("flwr %s: a restarted SuperNode exits while the SuperLink holds its last session",
                    flwr.__version__)
        return False
    fleet.HEARTBEAT_DEFAULT_INTERVAL = heartbeat.HEARTBEAT_DEFAULT_INTERVAL = heartbeat_s
    flwr_exit = fleet.flwr_exit

    def exit_unless_refused(code, message=None, *args, **kwargs):
        if code == ExitCode.SUPERNODE_CONNECTION_ERROR and f"[code: {ACTIVATION_REFUSED}]" in (message or ""):
            raise ActivationRefused(message)
        return flwr_exit(code, message, *args, **kwargs)

    fleet.flwr_exit = exit_unless_refused
    return True
