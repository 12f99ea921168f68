"""One thread that serves what requests hand it in batches: everything handed in while it served the last batch
(up to `most`) is the next. The outbox writer (one commit per batch) and the change desk (one query, one chain read
per batch) each run one."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("twinledger.portal")


class Batches:
    """`serve(batch)` answers each item itself; if it raises, `fail(item, error)` tells each item why, and the
    thread goes on with the next batch."""

    def __init__(self, serve: Callable[[list], None], fail: Callable[[object, Exception], None], *, name: str,
                 most: int):
        self._serve, self._fail, self.name, self.most = serve, fail, name, most
        self._handed: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()
        self._serving = False

    def hand(self, item) -> None:
        self._handed.put(item)
        self.start()

    def start(self) -> None:
        with self._started:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def busy(self) -> bool:
        """Whether anything waits to be served or is being served."""
        return self._serving or not self._handed.empty()

    def _run(self) -> None:
        while True:
            batch = [self._handed.get()]
            while len(batch) < self.most:
                try:
                    batch.append(self._handed.get_nowait())
                except queue.Empty:
                    break
            self._serving = True
            try:
                self._serve(batch)
            except Exception as exc:  # noqa: BLE001 - each waiting request hears why, none is left hanging
                log.exception("%s: a batch of %d failed", self.name, len(batch))
                for item in batch:
                    self._fail(item, exc)
            finally:
                self._serving = False
