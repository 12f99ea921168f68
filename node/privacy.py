"""The node's privacy account per study: every release that leaves the node, with its cost, in one budget.

Three kinds of release are charged to the study's (epsilon, delta), in one RDP account (node.store.PrivacySpend):

- "train": the DP-SGD steps a round actually took (the model weights it sends);
- "evaluate": one Gaussian release of a round's evaluation sums (`noisy_sums`), at most one per round;
- "count": the noisy count of training patients the node sends as its aggregation weight, once per study.

The study's evaluation share (on chain, `Consortium` study field `evaluationSharePercent`) fixes the noise of the
last two: its rounds' evaluations and the one count together spend at most that share of the budget. The noise
multiplier of each training round is then chosen so that the rounds the study still allows, and the evaluation
releases still possible, fit in what is left; a round that would exceed it is refused.
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

from federation.ids import StudyId
from node.store import PrivacySpend, Store

MAX_NOISE_MULTIPLIER = 50.0
# Opacus's RDP orders and the large ones Google's dp-accounting also uses: a small epsilon (an evaluation's
# share) needs a large order to be reached at all (epsilon >= log(1/delta) / (order - 1)).
ORDERS = tuple(RDPAccountant.DEFAULT_ALPHAS) + (128, 256, 512, 1024)
MAX_RELEASE_NOISE_MULTIPLIER = 1e4
# The operating system's CSPRNG (os.urandom), for the evaluation and count noise.
_SECURE = random.SystemRandom()


class BudgetSpent(Exception):
    """Training would exceed the study's privacy budget at this hospital."""


class BudgetBehindChain(Exception):
    """The node's own account shows less epsilon spent than the chain records for this hospital."""


def check_chain_spending(spent: float, recorded_micro: int, *, hospital: str, study_id: str) -> None:
    """Refuse (BudgetBehindChain) when the node's account (`spent`, epsilon) is below what the chain records as
    this hospital's spending (`recorded_micro`, Consortium.spendingOf in millionths). The node writes its account
    before it records on chain, so an account below the chain's is one restored from an older backup (or
    replaced): training on it would spend the same budget a second time."""
    from contracts.ledger import epsilon_micro

    if epsilon_micro(spent) < recorded_micro:
        raise BudgetBehindChain(
            f"hospital {hospital}'s privacy account for study {study_id} shows epsilon {spent:.6f} spent, the chain "
            f"records {recorded_micro / 1e6:.6f}: the node database is older than its last round (restored from a "
            "backup?); restore the newest backup, or leave this study (docs/operations.md, Backup and restore)")


def epsilon_of(history: list[tuple[float, float, int]], *, delta: float) -> float:
    """Epsilon of a sequence of (noise multiplier, sample rate, steps), by the RDP accountant."""
    if not history:
        return 0.0
    # Opacus's RDPAccountant.get_privacy_spent, with each (sigma, q)'s per-step RDP computed once: RDP composes
    # linearly in the steps. Planning a round evaluates this a few dozen times over the same history.
    rdp = sum(np.asarray(_rdp_per_step(sigma, rate)) * steps for sigma, rate, steps in history)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")  # a small epsilon's
        epsilon, _ = rdp_analysis.get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)
    return float(epsilon)


@lru_cache(maxsize=4096)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    return tuple(
        rdp_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=ORDERS
        )
    )


def release_noise_multiplier(*, epsilon: float, delta: float, releases: int) -> float:
    """The smallest noise multiplier (noise sd / L2 sensitivity) with which `releases` Gaussian releases
    together stay within (epsilon, delta); BudgetSpent when even the largest does not."""
    if epsilon <= 0 or releases < 1:
        raise BudgetSpent("the study gives its evaluation releases no privacy budget")

    def fits(sigma: float) -> bool:
        return epsilon_of([(sigma, 1.0, releases)], delta=delta) <= epsilon

    low, high = 0.3, MAX_RELEASE_NOISE_MULTIPLIER
    if not fits(high):
        raise BudgetSpent(f"{releases} evaluation releases cannot fit in epsilon {epsilon:g}")
    if fits(low):
        return low
    while high / low > 1.001:
        middle = math.sqrt(low * high)
        if fits(middle):
            high = middle
        else:
            low = middle
    return high


def secure_gaussian(sd: float) -> float:
    """N(0, sd^2) from the OS CSPRNG, as Opacus's secure mode draws it: the sum of four draws over two, which
    resists the floating-point attacks on a single draw (Opacus, optimizers/optimizer.py `_generate_noise`)."""
    return sum(_SECURE.gauss(0.0, sd) for _ in range(4)) / 2


def noisy_sums(sums: dict[str, float], bounds: dict[str, float], *, noise_multiplier: float,
               partitions: tuple = ()) -> dict[str, float]:
    """The Gaussian mechanism on a vector of sums where one patient moves each sum by at most its bound: in
    units of the bounds the vector's L2 sensitivity is `sums_sensitivity` (sqrt(len(bounds)) without
    partitions), so each sum gets noise of sd noise_multiplier * sensitivity * bound. Its RDP is one Gaussian
    step at `noise_multiplier`."""
    scale = noise_multiplier * sums_sensitivity(bounds, partitions)
    return {key: float(sums[key]) + secure_gaussian(scale * bound) for key, bound in bounds.items()}


def sums_sensitivity(bounds: dict[str, float], partitions: tuple = ()) -> float:
    """L2 sensitivity of the sums in units of their bounds. A partition (federation/tasks/base.py
    `evaluation_partitions`) is blocks of sums of which one patient adds to at most one (the node checks it):
    it counts as its largest block, not as all its sums. Every other sum counts once."""
    grouped = {key for partition in partitions for block in partition for key in block}
    if not grouped <= set(bounds):
        raise ValueError(f"partitioned sums without a bound: {sorted(grouped - set(bounds))}")
    return math.sqrt(len(set(bounds) - grouped) + sum(max(map(len, p), default=0) for p in partitions))


@dataclass(frozen=True)
class RoundPlan:
    noise_multiplier: float
    epsilon_after_round: float


class PrivacyBudget:
    def __init__(self, store: Store, *, study_id: str, epsilon_budget: float, delta: float,
                 evaluation_share: float = 0.0, rounds: int = 0):
        self.store = store
        self.study_id = study_id
        self.epsilon_budget = epsilon_budget
        self.delta = delta
        self.evaluation_share = evaluation_share
        self.rounds = rounds  # the study's rounds: each may be evaluated once

    @classmethod
    def of_study(cls, store: Store, terms) -> "PrivacyBudget":
        """The account of the study whose on-chain terms are `terms` (contracts.ledger.StudyTerms)."""
        return cls(store, study_id=str(StudyId(terms.study_id)), epsilon_budget=terms.epsilon_budget,
                   delta=terms.delta, evaluation_share=terms.evaluation_share, rounds=terms.rounds)

    def history(self) -> list[tuple[float, float, int]]:
        return [(s.noise_multiplier, s.sample_rate, s.steps) for s in self.store.spends(self.study_id)]

    def releases(self) -> list[PrivacySpend]:
        """Every release of this study's account, in order, each with epsilon spent after it."""
        return self.store.spends(self.study_id)

    def spent(self) -> float:
        return epsilon_of(self.history(), delta=self.delta)

    def rounds_trained(self) -> set[int]:
        return {s.round for s in self.releases() if s.release == "train"}

    def released(self, kind: str) -> list[PrivacySpend]:
        return [s for s in self.releases() if s.release == kind]

    def release_noise(self) -> float:
        """The noise multiplier of every evaluation and count release of this study: the study's rounds'
        evaluations and one count together spend at most the evaluation share of the budget."""
        return release_noise_multiplier(epsilon=self.epsilon_budget * self.evaluation_share, delta=self.delta,
                                        releases=self.rounds + 1)

    def _releases_left(self) -> list[tuple[float, float, int]]:
        """The evaluation and count releases still possible, as the planner reserves them."""
        if self.evaluation_share <= 0:
            return []
        left = self.rounds + 1 - len(self.released("evaluate")) - len(self.released("count"))
        return [(self.release_noise(), 1.0, left)] if left > 0 else []

    def charge(self, round_number: int, kind: str, *, value: float | None = None) -> float:
        """Charge one evaluation or count release at the study's release noise; BudgetSpent (nothing recorded)
        when it would exceed the budget. Returns epsilon spent after it."""
        sigma = self.release_noise()
        epsilon = epsilon_of(self.history() + [(sigma, 1.0, 1)], delta=self.delta)
        if epsilon > self.epsilon_budget * (1 + 1e-9):
            raise BudgetSpent(f"privacy budget spent: this {kind} release would bring epsilon to {epsilon:.3f} "
                              f"of {self.epsilon_budget:g}")
        self.store.record_spend([PrivacySpend(
            study_id=self.study_id, round=round_number, release=kind, value=value, noise_multiplier=sigma,
            sample_rate=1.0, steps=1, delta=self.delta, epsilon_after=epsilon,
        )])
        return epsilon

    def plan(self, *, sample_rate: float, steps_per_round: int, rounds_left: int) -> RoundPlan:
        """The smallest noise multiplier with which all `rounds_left` rounds fit in the budget."""
        past = self.history() + self._releases_left()  # room kept for the evaluations still to come
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
        after_round = epsilon_of(self.history() + [(high, sample_rate, steps_per_round)], delta=self.delta)
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
