"""The Python client of the TwinLedger contracts: one package for nodes, the coordinator, auditors and the portal.

- :mod:`contracts.ledger.client`: :class:`Ledger` (reads at a block, signed writes; the Consortium's calls);
- :mod:`contracts.ledger.governance`: roles and suspensions (mixed into :class:`Ledger`);
- :mod:`contracts.ledger.consent`: the ConsentRegistry's calls (mixed into :class:`Ledger`) and :class:`ConsentFollower`;
- :mod:`contracts.ledger.records`: the value types the reads return;
- :mod:`contracts.ledger.signing`: what patients sign (EIP-712 grant, revoke, cancel) and hospitals sign (round replies);
- :mod:`contracts.ledger.keys`: account key files, funding a dev account;
- :mod:`contracts.ledger.deployment`: connecting to a chain node, deploying, the deployment file;
- :mod:`contracts.ledger.errors`: :class:`LedgerError` and the contracts' custom errors in words.

Every name is importable from here (``from contracts import ledger as lg``; ``from contracts.ledger import
Ledger``). The commitment scheme lives in :mod:`federation.commitment` and the 32-byte value types in
:mod:`federation.ids`.
"""

from __future__ import annotations

import sys

# py_ecc, imported through eth-account (and so web3), raises the recursion limit to 100,000 on import. With
# that limit a deeply nested JSON (a legal FHIR resource with hundreds of nested extensions, or 200 KB of
# brackets) overflows the C stack and kills the process before Python can raise RecursionError. Import them
# here, once, and put a sane limit back: every process that reaches the ledger gets it.
import eth_account  # noqa: F401 - imported for the side effect above, before the limit is reset
import web3  # noqa: F401

SANE_RECURSION_LIMIT = 1000  # CPython's default
sys.setrecursionlimit(min(sys.getrecursionlimit(), SANE_RECURSION_LIMIT))

from contracts.ledger.client import MICRO, MILLI, Ledger, epsilon_micro  # noqa: E402 - after the limit is reset
from contracts.ledger.consent import (  # noqa: E402
    CONSENT_BATCH,
    CONSENT_BITMAP_SELECTOR,
    ENROL_BATCH,
    GRANT_BATCH,
    ConsentFollower,
)
from contracts.ledger.records import (  # noqa: E402
    ConsentChange,
    NodeKeyEvent,
    RoundAnchor,
    StudyTerms,
    from_bytes32,
    to_bytes32,
)
from contracts.ledger.deployment import Deployment, connect, deploy
from contracts.ledger.errors import ChainReset, ChainUnavailable, ContractRejected, LedgerError, StateUnavailable
from contracts.ledger.keys import fund_from_dev_account, load_key, write_key
from contracts.ledger.signing import (
    CONSENT_DOMAIN_NAME,
    CONSENT_DOMAIN_VERSION,
    ROUND_DOMAIN_NAME,
    ROUND_REPLY_TYPES,
    SignedCancel,
    SignedGrant,
    SignedRevoke,
    sign_cancel,
    sign_grant,
    sign_revoke,
    sign_round_reply,
    recover_round_reply,
)

__all__ = [
    "CONSENT_BATCH", "CONSENT_BITMAP_SELECTOR", "CONSENT_DOMAIN_NAME", "CONSENT_DOMAIN_VERSION", "ENROL_BATCH",
    "GRANT_BATCH", "MICRO", "MILLI", "SANE_RECURSION_LIMIT", "ChainReset", "ChainUnavailable", "ConsentChange", "ConsentFollower",
    "ContractRejected", "Deployment", "Ledger", "LedgerError", "NodeKeyEvent", "ROUND_DOMAIN_NAME",
    "ROUND_REPLY_TYPES", "RoundAnchor", "SignedCancel", "SignedGrant", "SignedRevoke", "StateUnavailable", "StudyTerms", "connect",
    "deploy", "from_bytes32", "fund_from_dev_account", "load_key", "recover_round_reply", "sign_cancel", "sign_grant", "sign_revoke", "sign_round_reply", "to_bytes32", "write_key",
]
