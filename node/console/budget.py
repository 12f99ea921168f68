"""The node's privacy budget per study: spent (from the node's own accounts) against the budget (from the chain)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlmodel import select

from contracts.ledger import LedgerError
from node.console.deps import ConsoleState
from node.console.schemas import PrivacyRelease, StudiesOut, StudyBudget, UnfinishedRead
from node.store import USAGE_COMPLETED, USAGE_INTENT, PrivacySpend, RoundRefusal, RoundUsage
from federation.ids import StudyId, hex0x


def _refusals(state: ConsoleState, study_id: str) -> int:
    return len(state.store.refusals(study_id))


def _account(rows: list[PrivacySpend]) -> list[PrivacyRelease]:
    """Every release of one study's account with its cost (the rise of epsilon it caused)."""
    out, before = [], 0.0
    for row in rows:
        out.append(PrivacyRelease(round=row.round, release=row.release, noise_multiplier=row.noise_multiplier,
                                  epsilon_after=row.epsilon_after, cost=max(row.epsilon_after - before, 0.0)))
        before = row.epsilon_after
    return out


def studies(state: ConsoleState) -> StudiesOut:
    with state.store.session() as db:
        spends = list(db.exec(select(PrivacySpend).order_by(PrivacySpend.id)))
        # The write-ahead log, read as the audit reads it (contracts/audit.py): a completed entry is a use; an
        # intent is a read a node that stopped never completed (its reply was not sent); a voided read released
        # nothing and is no use.
        log = list(db.exec(select(RoundUsage.study_id, RoundUsage.round, RoundUsage.phase, RoundUsage.status)))
        refused = list(db.exec(select(RoundRefusal.study_id)))
    usage = [u for u in log if u[3] == USAGE_COMPLETED]
    unfinished = sorted({(u[0], u[1], u[2]) for u in log if u[3] == USAGE_INTENT})
    # A study this node only ever refused (chain unreachable, budget spent...) is listed too.
    local = list(dict.fromkeys([s.study_id for s in spends] + [u[0] for u in log] + list(refused)))
    accepted: list[str] = []
    chain_ok, detail, ledger = True, "", None
    try:
        ledger = state.ledger()
        accepted = [hex0x(s) for s in ledger.accepted_studies(state.hospital_account())]
    except (LedgerError, OSError, ValueError) as exc:
        chain_ok, detail = False, f"the chain did not answer, budgets shown from the node's own accounts: {exc}"
    out = []
    for study_id in list(dict.fromkeys(accepted + local)):
        rows = [s for s in spends if s.study_id == study_id]
        terms, live, recorded = None, None, None
        if ledger is not None and chain_ok:
            try:
                terms = ledger.study(StudyId.parse(study_id))
                live = ledger.is_study_live_for(StudyId.parse(study_id), state.hospital_account())
                recorded = ledger.spending_of(StudyId.parse(study_id), state.hospital_account())
            except (LedgerError, ValueError):
                terms = None
        if terms is not None:
            from node.privacy import PrivacyBudget  # imports Opacus: only when a budget is shown

            spent = PrivacyBudget(state.store, study_id=study_id, epsilon_budget=terms.epsilon_budget,
                                  delta=terms.delta).spent()
        else:
            spent = rows[-1].epsilon_after if rows else 0.0
        behind = None
        if recorded is not None and terms is not None:
            from node.privacy import BudgetBehindChain, check_chain_spending

            try:
                check_chain_spending(spent, recorded, hospital=state.settings.node.hospital, study_id=study_id)
            except BudgetBehindChain as exc:
                behind = f"training refused (code 4013): {exc}"
        out.append(StudyBudget(
            study_id=study_id,
            accepted=(study_id in accepted) if chain_ok else None,
            live=live,
            purpose=terms.purpose if terms else None,
            task_id=terms.task_id if terms else None,
            epsilon_spent=spent,
            epsilon_budget=terms.epsilon_budget if terms else None,
            delta=terms.delta if terms else (rows[-1].delta if rows else None),
            rounds_allowed=terms.rounds if terms else None,
            rounds_contributed=len({u[1] for u in usage if u[0] == study_id and u[2] == "train"}),
            rounds_evaluated=len({u[1] for u in usage if u[0] == study_id and u[2] == "evaluate"}),
            reads_not_completed=[UnfinishedRead(round=r, phase=p) for sid, r, p in unfinished if sid == study_id],
            refusals=_refusals(state, study_id),
            ends_at=datetime.fromtimestamp(terms.ends_at, timezone.utc) if terms else None,
            suspended=terms.suspended if terms else None,
            evaluation_share=terms.evaluation_share if terms else None,
            releases=_account(rows),
            epsilon_on_chain=recorded / 1e6 if recorded is not None else None,
            behind_chain=behind,
        ))
    return StudiesOut(chain_ok=chain_ok, detail=detail or f"studies this hospital accepted on chain: {len(accepted)}", studies=out)
