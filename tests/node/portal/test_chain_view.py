"""The portal's ChainView: what patients' requests share (accepted studies, study terms, the chain's clock) is
asked once per short interval, and everything else, above all the consent and the nonce, is read fresh."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from node.portal.chain_view import ChainView


class CountingLedger:
    address = "0x" + "11" * 20

    def __init__(self):
        self.calls: list[str] = []
        self.clock = 1000

    def accepted_studies(self, hospital):
        self.calls.append("accepted")
        return [b"s" * 32]

    def study(self, study_id, *, block="latest"):
        self.calls.append(f"study@{block}")
        return ("terms", study_id)

    def block_timestamp(self, block="latest"):
        self.calls.append(f"clock@{block}")
        return self.clock

    def head(self):
        self.calls.append("clock@latest")
        return 50, self.clock

    def patient_nonce(self, pseudonym):
        self.calls.append("nonce")
        return 7


def test_many_requests_share_one_read_of_the_studies_terms_and_clock():
    ledger = CountingLedger()
    view = ChainView(lambda: ledger)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: (view.accepted_studies(ledger.address), view.study(b"s" * 32), view.block_timestamp(),
                                 view.patient_nonce(b"p" * 32)), range(50)))
    assert sorted(set(ledger.calls)) == ["accepted", "clock@latest", "nonce", "study@latest"]
    assert ledger.calls.count("accepted") == ledger.calls.count("study@latest") == ledger.calls.count("clock@latest") == 1
    assert ledger.calls.count("nonce") == 50  # a patient's nonce is never kept


def test_what_is_kept_is_read_again_after_its_time_and_other_blocks_are_never_kept():
    ledger = CountingLedger()
    view = ChainView(lambda: ledger, studies_ttl_s=0.0, studies_stale_s=0.0, clock_ttl_s=0.0)
    assert view.block_timestamp() == 1000
    ledger.clock = 1005
    assert view.block_timestamp() == 1005
    view.study(b"s" * 32)
    view.study(b"s" * 32)
    view.study(b"s" * 32, block=12)
    view.block_timestamp(12)
    assert ledger.calls.count("study@latest") == 2 and "study@12" in ledger.calls and "clock@12" in ledger.calls
    assert view.address == ledger.address  # everything else is the ledger's
    assert view.head() == (50, 1005)


def test_an_old_answer_is_given_at_once_while_one_background_read_renews_it():
    ledger = CountingLedger()
    view = ChainView(lambda: ledger, studies_ttl_s=0.0, studies_stale_s=60.0)
    view.study(b"s" * 32)
    started = threading.Event()
    release = threading.Event()

    def slow_study(study_id, *, block="latest"):
        started.set()
        release.wait(5)
        ledger.calls.append("study@latest")
        return ("new terms", study_id)

    ledger.study = slow_study
    assert view.study(b"s" * 32) == ("terms", b"s" * 32)  # answered as kept: nobody waits for the chain
    assert started.wait(5)
    assert view.study(b"s" * 32) == ("terms", b"s" * 32)  # one renewal at a time
    release.set()
    deadline = time.monotonic() + 5
    while view.study(b"s" * 32) != ("new terms", b"s" * 32) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert view.study(b"s" * 32) == ("new terms", b"s" * 32)
    assert ledger.calls.count("study@latest") >= 2


def test_an_answer_older_than_the_stale_limit_is_read_before_anyone_is_answered():
    ledger = CountingLedger()
    view = ChainView(lambda: ledger, studies_ttl_s=0.0, studies_stale_s=0.0)
    view.accepted_studies(ledger.address)
    ledger.accepted_studies = lambda hospital: [b"t" * 32]
    assert view.accepted_studies(ledger.address) == [b"t" * 32]
