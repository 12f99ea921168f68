"""SuperLinks started on this machine, found again by port.

The demo, the tests and the consoles pass one port around ("the SuperLink"); the SuperNodes must dial the
gateway there, the operator's `flwr` the loopback control address, both trusting the link's CA. A link records
itself under both its ports in a directory only this user can write, and a record of a process that is gone
is ignored.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LinkRecord:
    fleet_address: str
    control_address: str
    root_certificates: Path | None
    pid: int

    @property
    def insecure(self) -> bool:
        return self.root_certificates is None


def _links_dir() -> Path:
    directory = Path(os.environ.get("TWINLEDGER_LINKS_DIR")
                     or Path(tempfile.gettempdir()) / f"twinledger-{os.getuid()}" / "superlinks")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


def _ports(link) -> set[int]:
    return {int(link.fleet_address.rpartition(":")[2]), int(link.control_address.rpartition(":")[2])}


def remember_link(link) -> None:
    """Record a started link under its ports (see `find_link`)."""
    record = {"fleet_address": link.fleet_address, "control_address": link.control_address,
              "root_certificates": str(link.root_certificates) if link.root_certificates else None,
              "pid": link.process.pid}
    for port in _ports(link):
        (_links_dir() / f"{port}.json").write_text(json.dumps(record) + "\n")


def forget_link(link) -> None:
    if link.fleet_address:
        for port in _ports(link):
            (_links_dir() / f"{port}.json").unlink(missing_ok=True)


def find_link(port: int) -> LinkRecord | None:
    """The link `start_superlink` started on this machine with `port` as its hospitals' or control port, if it
    still runs; None otherwise."""
    directory = _links_dir()
    path = directory / f"{port}.json"
    if directory.stat().st_uid != os.getuid() or not path.exists():
        return None
    data = json.loads(path.read_text())
    try:
        os.kill(data["pid"], 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return None
    except PermissionError:
        return None
    root = data["root_certificates"]
    return LinkRecord(data["fleet_address"], data["control_address"], Path(root) if root else None, data["pid"])
