"""The node's privacy budget per study: epsilon from the DP-SGD steps actually taken, kept in the database.

The noise multiplier of each round is chosen so that the rounds the study still allows, at this round's
sampling rate and steps, fit in what is left of the budget; a round that would exceed it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

from node.store import PrivacySpend, Store

MAX_NOISE_MULTIPLIER = 50.0


class BudgetSpent(Exception):
    """Training would exceed the study's privacy budget at this hospital."""


def epsilon_of(history: list[tuple[float, float, int]], *, delta: float) -> float:
    """Epsilon of a sequence of (noise multiplier, sample rate, steps), by the RDP accountant."""
    if not history:
        return 0.0
    # Opacus's RDPAccountant.get_privacy_spent, with each (sigma, q)'s per-step RDP computed once: RDP composes
    # linearly in the steps. Planning a round evaluates this a few dozen times over the same history.
    rdp = sum(np.asarray(_rdp_per_step(sigma, rate)) * steps for sigma, rate, steps in history)
    epsilon, _ = rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
    return float(epsilon)


@lru_cache(maxsize=4096)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    return tuple(
        rdp_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS
        )
    )


@dataclass(frozen=True)
class RoundPlan:
    noise_multiplier: float
    epsilon_after_round: float


class PrivacyBudget:
    def __init__(self, store: Store, *, study_id: str, epsilon_budget: float, delta: float):
        self.store = store
        self.study_id = study_id
        self.epsilon_budget = epsilon_budget
        self.delta = delta

    def history(self) -> list[tuple[float, float, int]]:
        return [(s.noise_multiplier, s.sample_rate, s.steps) for s in self.store.spends(self.study_id)]

    def spent(self) -> float:
        return epsilon_of(self.history(), delta=self.delta)

    def rounds_trained(self) -> set[int]:
        return {s.round for s in self.store.spends(self.study_id)}

    def plan(self, *, sample_rate: float, steps_per_round: int, rounds_left: int) -> RoundPlan:
        """The smallest noise multiplier with which all `rounds_left` rounds fit in the budget."""
        past = self.history()
        if rounds_left < 1:
            raise BudgetSpent("the study allows no further rounds")

        def total(sigma: float) -> float:
            return epsilon_of(past + [(sigma, sample_rate, steps_per_round * rounds_left)], delta=self.delta)

        if total(MAX_NOISE_MULTIPLIER) > self.epsilon_budget:
            raise BudgetSpent(
                f"privacy budget spent: epsilon {self.spent():.3f} of {self.epsilon_budget:g} used; "
                f"{rounds_left} more round(s) would exceed it"
            )
        low, high = 0.3, MAX_NOISE_MULTIPLIER
        if total(low) <= self.epsilon_budget:
            high = low
        for _ in range(40):
            if high - low < 1e-3:
                break
            middle = (low + high) / 2
            if total(middle) <= self.epsilon_budget:
                high = middle
            else:
                low = middle
        after_round = epsilon_of(past + [(high, sample_rate, steps_per_round)], delta=self.delta)
        return RoundPlan(noise_multiplier=high, epsilon_after_round=after_round)

    def record(self, round_number: int, steps_taken: list[tuple[float, float, int]]) -> float:
        """Record the steps a round actually took; returns epsilon spent so far."""
        past = self.history()
        spends, epsilon = [], 0.0
        for sigma, rate, steps in steps_taken:
            past.append((sigma, rate, steps))
            epsilon = epsilon_of(past, delta=self.delta)
            spends.append(
                PrivacySpend(
                    study_id=self.study_id, round=round_number, noise_multiplier=sigma, sample_rate=rate,
                    steps=steps, delta=self.delta, epsilon_after=epsilon,
                )
            )
        self.store.record_spend(spends)
        return epsilon if spends else self.spent()
