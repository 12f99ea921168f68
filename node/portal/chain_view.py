"""The chain as patients' requests read it: what every request would otherwise ask again, asked once for all.

A burst of patients changing consent each needed the hospital's accepted studies (an event query), the
study's terms and the chain's clock before signing: three chain reads of tens of milliseconds per request, all
with the same answer. `ChainView` wraps the hospital's Ledger and keeps those answers briefly:

- the studies this hospital accepted, and each study's terms at the latest block: `studies_ttl_s` (5 s). Older
  than that but younger than `studies_stale_s` (5 minutes), the kept answer is still given while one background read
  renews it, so that no patient waits for that read (the first of a burst after a quiet spell would otherwise
  hold up all the others). A study accepted or suspended just now shows so within 5 s while patients use the
  portal, and at the second request after a quiet spell. A grant queued meanwhile is recorded as the patient
  asked, as one queued just before a suspension always was: suspension stops the study's use of data (nodes
  check it every round), not consent.
- the latest block's number and timestamp (the chain's clock a signature's validity and deadline start from,
  and the block a "sent" answer shows the consent at): `clock_ttl_s` (1 s).

Everything else goes to the ledger unchanged, read fresh: the patient's nonce, the consent itself, the block
number a consent is shown at (a change recorded at block N is never shown from a block before N). Writes never
go through it: the relay worker has the Ledger itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from contracts.ledger import Ledger, StudyTerms
from federation.ids import StudyId

log = logging.getLogger("twinledger.portal.chain")


class ChainView:
    def __init__(self, ledger: Callable[[], Ledger], *, studies_ttl_s: float = 5.0, studies_stale_s: float = 300.0,
                 clock_ttl_s: float = 1.0):
        self._ledger = ledger
        self.studies_ttl_s, self.studies_stale_s, self.clock_ttl_s = studies_ttl_s, studies_stale_s, clock_ttl_s
        self._lock = threading.Lock()  # one refresh at a time: the others wait for its answer, not the chain
        self._studies: dict[tuple, tuple[float, object]] = {}  # accepted studies and terms: (read at, answer)
        self._renewing: set[tuple] = set()
        self._clock: tuple[float, tuple[int, int]] | None = None

    @property
    def ledger(self) -> Ledger:
        return self._ledger()

    def __getattr__(self, name: str):
        return getattr(self._ledger(), name)

    def accepted_studies(self, hospital: str) -> list[StudyId]:
        return list(self._kept(("accepted", hospital), lambda: self._ledger().accepted_studies(hospital)))

    def study(self, study_id: bytes, *, block: int | str = "latest") -> StudyTerms:
        if block != "latest":
            return self._ledger().study(study_id, block=block)
        return self._kept(("terms", bytes(study_id)), lambda: self._ledger().study(study_id))

    def _kept(self, key: tuple, read: Callable):
        """The answer kept under `key`: read now when there is none or it is older than `studies_stale_s`; kept as
        it is within `studies_ttl_s`; in between, answered as kept while one background read renews it."""
        with self._lock:
            kept = self._studies.get(key)
            age = time.monotonic() - kept[0] if kept is not None else None
            if age is not None and age <= self.studies_ttl_s:
                return kept[1]
            if age is not None and age <= self.studies_stale_s:
                if key not in self._renewing:
                    self._renewing.add(key)
                    threading.Thread(target=self._renew, args=(key, read), name="chain-view", daemon=True).start()
                return kept[1]
            answer = read()
            self._studies[key] = (time.monotonic(), answer)
            return answer

    def _renew(self, key: tuple, read: Callable) -> None:
        try:
            answer = read()
        except Exception as exc:  # noqa: BLE001 - the kept answer stays until studies_stale_s; then a request reads
            log.warning("the chain view could not renew %s (%s): requests read it again after %.0f s", key[0], exc,
                        self.studies_stale_s)
        else:
            with self._lock:
                self._studies[key] = (time.monotonic(), answer)
        finally:
            with self._lock:
                self._renewing.discard(key)

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
