"""What a hospital node does in a round: gate, budget, train or evaluate, record, reply.

This is the node's core, free of Flower: client_app.py only turns messages into calls here and back.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from contracts.ledger import ChainUnavailable, Ledger, LedgerError, load_key, pseudonym_commitment
from federation import protocol
from federation.protocol import RoundConfig
from federation.tasks import get_task
from federation.tasks.heart_disease import standardiser
from node.consent_gate import Admitted, ConsentGate, Refusal
from node.settings import NodeSettings
from node.store import RoundUsage, Store
from node.trainer import evaluate, steps_per_epoch
from node.vault import Vault, VaultError

log = logging.getLogger("twinledger.node")


@dataclass
class TrainOutcome:
    state: dict[str, torch.Tensor]
    num_examples: int
    epsilon_spent: float
    epsilon_budget: float
    commitment: bytes
    mean_loss: float


@dataclass
class EvaluateOutcome:
    num_examples: int
    correct: int
    loss_sum: float
    commitment: bytes
    consented: int  # training and test patients whose consent held at the pinned block
    positives: int  # test patients with the condition: lets the coordinator report a constant predictor


class HospitalNode:
    def __init__(self, settings: NodeSettings, *, ledger: Ledger | None = None):
        self.settings = settings
        self.store = Store(settings.resolved_database_url)
        self._ledger = ledger

    @cached_property
    def ledger(self) -> Ledger:
        if self._ledger is not None:
            return self._ledger
        if self.settings.deployment_file is None:
            raise Refusal(protocol.CHAIN_UNAVAILABLE, "no data used: this node has no deployment file configured")
        try:
            return Ledger.open(
                self.settings.rpc_url,
                self.settings.deployment_file,
                key_path=self.settings.hospital_key_file,
                timeout_s=self.settings.chain_timeout_s,
            )
        except ChainUnavailable as exc:
            raise Refusal(protocol.CHAIN_UNAVAILABLE, f"no data used: {exc}") from exc
        except LedgerError as exc:
            raise Refusal(protocol.CHAIN_UNAVAILABLE, f"no data used: {exc}") from exc

    @property
    def account(self) -> str:
        return self.ledger.address

    def _gate(self) -> ConsentGate:
        try:
            vault = Vault.open(self.settings.data_key_file)
        except VaultError as exc:
            raise Refusal(protocol.RECORD_UNCLEAR, f"no data used: {exc}") from exc
        return ConsentGate(
            self.ledger, self.store, vault, hospital_account=self.account,
            max_pinned_block_age_s=self.settings.max_pinned_block_age_s,
        )

    def _admit(self, config: RoundConfig, cohort: str):
        gate = self._gate()
        terms = gate.check_study(config.study_id, config.block)
        if terms.epsilon_budget >= protocol.NON_PRIVATE_EPSILON and not self.settings.allow_non_private_studies:
            raise Refusal(
                protocol.STUDY_NOT_ACCEPTED,
                f"no data used: the study is recorded as non-private (epsilon budget {terms.epsilon_budget:g} >= "
                f"{protocol.NON_PRIVATE_EPSILON:g}) and this node does not allow non-private studies "
                "(allow-non-private-studies in node.toml)",
            )
        try:
            task = get_task(terms.task_id)
        except KeyError as exc:
            raise Refusal(protocol.STUDY_NOT_ACCEPTED, f"no data used: {exc.args[0]}") from exc
        train = gate.admit(config.study_id, config.block, cohort="train", fields=task.fields)
        admitted = train if cohort == "train" else gate.admit(config.study_id, config.block, cohort=cohort, fields=task.fields)
        if not admitted.pseudonyms:
            raise Refusal(protocol.NO_CONSENTED_PATIENTS, f"no {cohort} patient holds consent at block {config.block}")
        return terms, task, train, admitted

    def _record_usage(self, config: RoundConfig, phase: str, used: list[bytes]) -> bytes:
        commitment = pseudonym_commitment(used)
        self.store.record_usage(
            RoundUsage(
                study_id="0x" + config.study_id.hex(),
                round=config.round,
                phase=phase,
                block=config.block,
                commitment="0x" + commitment.hex(),
                pseudonyms=json.dumps(sorted("0x" + p.hex() for p in used)),
            )
        )
        return commitment

    def train(self, config: RoundConfig, global_state: dict[str, torch.Tensor]) -> TrainOutcome:
        # Opacus takes seconds to import; every Flower message starts a fresh process, and only training needs it.
        from node.privacy import BudgetSpent, PrivacyBudget
        from node.trainer import train_private

        terms, task, train, _ = self._admit(config, "train")
        study = "0x" + config.study_id.hex()
        if terms.epsilon_budget >= protocol.NON_PRIVATE_EPSILON:  # _admit let it through: this node opted in
            return self._train_non_private(config, terms, task, train, global_state)
        budget = PrivacyBudget(self.store, study_id=study, epsilon_budget=terms.epsilon_budget, delta=terms.delta)
        if config.round in budget.rounds_trained():
            raise Refusal(protocol.BAD_REQUEST, f"round {config.round} was already trained here: replayed request")
        features, labels = task.examples(train.records)
        mean, std = standardiser(features)
        features = (features - mean) / std
        sample_rate, steps = steps_per_epoch(len(labels), config.batch_size)
        try:
            plan = budget.plan(
                sample_rate=sample_rate,
                steps_per_round=steps * config.local_epochs,
                rounds_left=terms.rounds - config.round + 1,
            )
        except BudgetSpent as exc:
            raise Refusal(protocol.BUDGET_SPENT, f"no data used: {exc}") from exc
        model = task.build_model()
        model.load_state_dict(global_state)
        result = train_private(
            model,
            task.loss,
            features,
            labels,
            epochs=config.local_epochs,
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
            max_grad_norm=config.max_grad_norm,
            noise_multiplier=plan.noise_multiplier,
        )
        epsilon = budget.record(config.round, result.steps_taken)
        commitment = self._record_usage(config, "train", train.pseudonyms)
        log.info(
            "%s round %d: trained on %d consented patients at block %d, noise %.2f, epsilon %.3f of %g",
            self.settings.hospital, config.round, len(labels), config.block, plan.noise_multiplier, epsilon,
            terms.epsilon_budget,
        )
        return TrainOutcome(result.state, len(labels), epsilon, terms.epsilon_budget, commitment, result.mean_loss)

    def _train_non_private(self, config: RoundConfig, terms, task, train, global_state) -> TrainOutcome:
        """Plain SGD for a study recorded as non-private; epsilon is reported as infinity (no DP guarantee)."""
        from node.trainer import train_plain

        study = "0x" + config.study_id.hex()
        if any(u.round == config.round and u.phase == "train" for u in self.store.usage(study)):
            raise Refusal(protocol.BAD_REQUEST, f"round {config.round} was already trained here: replayed request")
        features, labels = task.examples(train.records)
        mean, std = standardiser(features)
        model = task.build_model()
        model.load_state_dict(global_state)
        result = train_plain(
            model, task.loss, (features - mean) / std, labels, epochs=config.local_epochs,
            learning_rate=config.learning_rate, batch_size=config.batch_size,
        )
        commitment = self._record_usage(config, "train", train.pseudonyms)
        log.info(
            "%s round %d: trained WITHOUT differential privacy (non-private study) on %d consented patients at block %d",
            self.settings.hospital, config.round, len(labels), config.block,
        )
        return TrainOutcome(result.state, len(labels), math.inf, terms.epsilon_budget, commitment, result.mean_loss)

    def evaluate(self, config: RoundConfig, global_state: dict[str, torch.Tensor]) -> EvaluateOutcome:
        _, task, train, test = self._admit(config, "test")
        if not train.pseudonyms:
            raise Refusal(protocol.NO_CONSENTED_PATIENTS, "no consented training patients to standardise with")
        train_features, _ = task.examples(train.records)
        mean, std = standardiser(train_features)
        features, labels = task.examples(test.records)
        model = task.build_model()
        model.load_state_dict(global_state)
        correct, loss_sum = evaluate(model, task.loss, (features - mean) / std, labels)
        # Evaluation reads the training patients too (for the standardisation): both are recorded.
        commitment = self._record_usage(config, "evaluate", test.pseudonyms + train.pseudonyms)
        log.info(
            "%s round %d: evaluated on %d consented test patients at block %d: accuracy %.3f",
            self.settings.hospital, config.round, len(labels), config.block, correct / len(labels),
        )
        return EvaluateOutcome(
            len(labels), correct, loss_sum, commitment, len(train.pseudonyms) + len(test.pseudonyms), int(labels.sum())
        )
