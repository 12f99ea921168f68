"""One hospital key, several senders: the node's spending records, the portal's relays and hospital IT's commands
all send from the hospital's account, each taking the chain's next nonce. Sent at the same moment, two took the
same nonce and one failed ('nonce too low', 'replacement transaction underpriced'): a relay retried later, but a
node whose spending record failed refused its round. Every transaction must go through."""

from __future__ import annotations

import os
import threading

import pytest

from contracts import ledger as lg
from tests.conftest import _deploy

pytestmark = pytest.mark.slow


def test_transactions_sent_at_once_from_one_key_by_separate_clients_all_go_through(anvil_url, artifacts):
    chain = _deploy(lg.connect(anvil_url), anvil_url, artifacts)
    errors: list[str] = []
    start = threading.Barrier(3)

    def sender() -> None:
        # A client of its own, as another process would have: nothing shared but the key.
        ledger = lg.Ledger(lg.connect(anvil_url), chain.deployment, account_key=chain.hospital._key)
        start.wait()
        for _ in range(4):
            try:
                ledger._transact(ledger.consent.functions.commitEnrolment(os.urandom(32)))
            except lg.LedgerError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=sender) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
