"""The fault suite's shared fixture: a durable dev chain (tests/faults/chain.py) stopped after the test."""

import pytest

from tests.faults.chain import DurableChain


@pytest.fixture
def durable(tmp_path):
    chain = DurableChain(tmp_path)
    yield chain
    chain.stop()
