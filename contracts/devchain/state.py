"""The development chain's state file, kept so that a crash loses seconds, not the chain.

anvil (1.7.1) dumps its state (accounts, storage, blocks, transactions) every `--state-interval` seconds to
`--state FILE` and loads it on start. It writes the file in place: a kill in the middle of a dump leaves it
truncated, and anvil then refuses to start from it. So a keeper copies every complete dump aside
(`FILE.kept`, written to a temporary file and renamed, which is atomic), and `restore` puts the newest complete
copy back before anvil starts. At worst the blocks of the last two intervals (plus the keeper's poll) are lost.

anvil keeps the state at earlier blocks only in memory (`--preserve-historical-states` would dump the whole
state once per block, which grows with the square of the chain's length): after a restart it answers state
queries at the current block and later only. docs/operations.md says what that means for nodes and audits.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from federation.files import write_atomically

log = logging.getLogger("twinledger.chain")


def kept_path(state_file: Path) -> Path:
    return state_file.with_name(state_file.name + ".kept")


def is_complete(path: Path) -> bool:
    """Whether `path` holds one whole JSON document (anvil's dump); False when missing or cut short."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return _complete(data)


def _complete(data: bytes) -> bool:
    if not data.rstrip().endswith(b"}"):  # cheap first: a dump cut short almost never ends so
        return False
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def restore(state_file: Path) -> None:
    """Before anvil starts from `state_file`: if the file is cut short (killed mid-dump), put the kept copy in
    its place. Raises ValueError when there is a state file but no complete copy of it anywhere."""
    state_file = Path(state_file)
    if not state_file.exists() or is_complete(state_file):
        return
    kept = kept_path(state_file)
    if not is_complete(kept):
        raise ValueError(f"the chain's state file {state_file} is cut short (the chain was killed while writing "
                         f"it) and there is no complete copy at {kept}: the chain cannot be restored")
    log.warning("the chain's state file %s is cut short (killed while writing it); starting from the copy "
                "kept at %s", state_file, kept)
    write_atomically(state_file, kept.read_bytes())


class StateKeeper(threading.Thread):
    """Copies each complete dump of `state_file` to `kept_path(state_file)` while `alive()` (anvil runs)."""

    def __init__(self, state_file: Path, *, interval_s: float, alive):
        super().__init__(name=f"state keeper {state_file.name}", daemon=True)
        self.state_file = Path(state_file)
        self.interval_s = interval_s
        self.alive = alive
        self._seen: tuple[int, int] | None = None
        self._stopped = threading.Event()

    def run(self) -> None:
        while self.alive() and not self._stopped.wait(self.interval_s):
            self.keep()

    def stop(self) -> None:
        self._stopped.set()

    def keep(self) -> bool:
        """Copy the state file aside if it changed and is complete; True when it did."""
        try:
            stat = self.state_file.stat()
            if (stat.st_mtime_ns, stat.st_size) == self._seen:
                return False
            data = self.state_file.read_bytes()
        except OSError:
            return False
        if not _complete(data):
            return False  # being written: the next poll takes it
        write_atomically(kept_path(self.state_file), data)
        self._seen = (stat.st_mtime_ns, stat.st_size)
        return True
