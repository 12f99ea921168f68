"""A node's privacy spending anchored on chain (Consortium.recordSpending / spendingOf): a node database restored
from an older backup cannot reopen a spent budget (protocol.BUDGET_BEHIND_CHAIN)."""

from __future__ import annotations

import logging

from contracts.ledger import LedgerError
from federation import protocol
from federation.protocol import RoundConfig
from node.consent_gate import Refusal
from node.privacy import BudgetBehindChain, check_chain_spending

log = logging.getLogger("twinledger.node")


def check(node, config: RoundConfig, budget) -> None:
    """Refuse (BUDGET_BEHIND_CHAIN) while the node's privacy account is below the spending the chain records
    for this hospital at the pinned block (node/privacy.py `check_chain_spending`)."""
    try:
        recorded = node.ledger.spending_of(config.study_id, node.account, block=config.block)
    except LedgerError as exc:
        raise Refusal(protocol.CHAIN_UNAVAILABLE, f"no data used: the chain's record of this hospital's "
                                                  f"privacy spending cannot be read: {exc}") from exc
    try:
        check_chain_spending(budget.spent(), recorded, hospital=node.settings.hospital,
                             study_id=str(config.study_id))
    except BudgetBehindChain as exc:
        raise Refusal(protocol.BUDGET_BEHIND_CHAIN, f"no data used: {exc}") from exc


def record(node, config: RoundConfig, epsilon: float) -> None:
    """Record the account's epsilon on chain, after the node's own account holds it (so the account is never
    below the chain's record). A failure is logged: the next round's release records the larger value."""
    try:
        node.ledger.record_spending(config.study_id, epsilon)
    except LedgerError as exc:
        log.warning("%s round %d: epsilon %.6f spent is in the node's privacy account but could not be recorded "
                    "on chain (the next round records it): %s", node.settings.hospital, config.round, epsilon, exc)
