"""The one fixture every record test uses: a node's store and data key in a temporary directory."""

from __future__ import annotations

import pytest

from node.store import Store
from node.vault import Vault, create_key_file


@pytest.fixture
def node(tmp_path):
    create_key_file(tmp_path / "data.key")
    return Store(f"sqlite:///{tmp_path / 'node.db'}"), Vault.open(tmp_path / "data.key")
