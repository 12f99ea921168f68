"""What the web kit needs to know about a chain failure, without importing the chain room (contracts/).

contracts.ledger's errors derive from these, so federation/web/errors.py answers them (409 for a refusal, 503
for a chain that cannot answer) while federation/ imports no other room.
"""

from __future__ import annotations


class ChainError(Exception):
    """Something on the chain's side failed; the message says why in the domain's words."""


class ChainDown(ChainError):
    """The chain node could not be reached or did not answer in time."""


class ChainRefusal(ChainError):
    """A contract refused the call; `error_name` is its custom error's name when known."""

    error_name: str | None = None
