"""The chain as patients' requests read it: what every request would otherwise ask again, asked once for all.

A burst of patients changing consent each needed the hospital's accepted studies (an event query), the
study's terms and the chain's clock before signing: three chain reads of tens of milliseconds per request, all
with the same answer. `ChainView` wraps the hospital's Ledger and keeps those answers briefly:

- the studies this hospital accepted, and each study's terms at the latest block: `studies_ttl_s` (5 s). A study
  accepted or suspended just now shows so within that time. A grant queued meanwhile is recorded as the patient
  asked, as one queued just before a suspension always was: suspension stops the study's use of data (nodes
  check it every round), not consent.
- the latest block's number and timestamp (the chain's clock a signature's validity and deadline start from,
  and the block a "sent" answer shows the consent at): `clock_ttl_s` (1 s).

Everything else goes to the ledger unchanged, read fresh: the patient's nonce, the consent itself, the block
number a consent is shown at (a change recorded at block N is never shown from a block before N). Writes never
go through it: the relay worker has the Ledger itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from contracts.ledger import Ledger, StudyTerms
from federation.ids import StudyId


class ChainView:
    def __init__(self, ledger: Callable[[], Ledger], *, studies_ttl_s: float = 5.0, clock_ttl_s: float = 1.0):
        self._ledger = ledger
        self.studies_ttl_s, self.clock_ttl_s = studies_ttl_s, clock_ttl_s
        self._lock = threading.Lock()  # one refresh at a time: the others wait for its answer, not the chain
        self._accepted: tuple[float, str, list[StudyId]] | None = None
        self._terms: dict[bytes, tuple[float, StudyTerms]] = {}
        self._clock: tuple[float, tuple[int, int]] | None = None

    @property
    def ledger(self) -> Ledger:
        return self._ledger()

    def __getattr__(self, name: str):
        return getattr(self._ledger(), name)

    def accepted_studies(self, hospital: str) -> list[StudyId]:
        with self._lock:
            if (self._accepted is None or self._accepted[1] != hospital
                    or time.monotonic() - self._accepted[0] > self.studies_ttl_s):
                self._accepted = (time.monotonic(), hospital, self._ledger().accepted_studies(hospital))
            return list(self._accepted[2])

    def study(self, study_id: bytes, *, block: int | str = "latest") -> StudyTerms:
        if block != "latest":
            return self._ledger().study(study_id, block=block)
        with self._lock:
            cached = self._terms.get(bytes(study_id))
            if cached is None or time.monotonic() - cached[0] > self.studies_ttl_s:
                cached = (time.monotonic(), self._ledger().study(study_id))
                self._terms[bytes(study_id)] = cached
            return cached[1]

    def block_timestamp(self, block: int | str = "latest") -> int:
        if block != "latest":
            return self._ledger().block_timestamp(block)
        return self.head()[1]

    def head(self) -> tuple[int, int]:
        """(number, timestamp) of the latest block, as of at most `clock_ttl_s` ago."""
        with self._lock:
            if self._clock is None or time.monotonic() - self._clock[0] > self.clock_ttl_s:
                self._clock = (time.monotonic(), self._ledger().head())
            return self._clock[1]
