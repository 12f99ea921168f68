"""What a hospital node does in a round: gate, budget, train or evaluate, record, reply.

This is the node's core, free of Flower: client_app.py only turns messages into calls here and back.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from functools import cached_property

import torch

from contracts.ledger import ChainReset, Ledger, LedgerError
from federation import protocol
from federation.commitment import pseudonym_commitment
from federation.ids import hex0x
from federation.protocol import RoundConfig
from federation.tasks import get_task
from node.consent_gate import Admitted, ConsentGate, Refusal
from node.models_store import save_model
from node.settings import NodeSettings
from node.store import RoundUsage, Store
from node.trainer import steps_per_epoch
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
    num_examples: int  # test patients evaluated
    sums: dict[str, float]  # the task's additive statistics (federation/tasks/base.py), added up by the coordinator
    metrics: dict[str, float]  # this node's own metrics from those sums, for its log
    commitment: bytes
    consented: int  # training and test patients whose consent held at the pinned block (those read)

    def __getattr__(self, name: str):
        # outcome.correct, outcome.loss_sum, ...: the task's sums by attribute
        sums = self.__dict__.get("sums", {})
        key = name.replace("_", "-")
        if key in sums:
            return sums[key]
        raise AttributeError(name)


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
            return Ledger.from_settings(self.settings, key_file=self.settings.hospital_key_file)
        except ChainReset as exc:
            raise Refusal(protocol.CHAIN_RESET, f"no data used: {exc}") from exc
        except LedgerError as exc:  # ChainUnavailable or any other: no data is used without the chain
            raise Refusal(protocol.CHAIN_UNAVAILABLE, f"no data used: {exc}") from exc

    @property
    def account(self) -> str:
        return self.ledger.address

    def _gate(self, store: Store) -> ConsentGate:
        try:
            vault = Vault.open(self.settings.data_key_file)
        except VaultError as exc:
            raise Refusal(protocol.RECORD_UNCLEAR, f"no data used: {exc}") from exc
        return ConsentGate(
            self.ledger, store, vault, hospital_account=self.account,
            max_pinned_block_age_s=self.settings.max_pinned_block_age_s,
        )

    def _admit(self, config: RoundConfig, cohort: str):
        """The study's terms, its task, and the consented patients: training ones (if the phase reads them,
        else None) and those of `cohort`. Only patients of the kind the task reads are candidates."""
        gate = self._gate(self.store)
        terms = gate.check_study(config.study_id, config.block, round_number=config.round,
                                 block_hash=config.block_hash)
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
        if terms.purpose != task.purpose:
            raise Refusal(
                protocol.STUDY_NOT_ACCEPTED,
                f"no data used: the study's purpose {terms.purpose!r} is not the purpose task {task.task_id} serves "
                f"({task.purpose!r})",
            )
        gate = self._gate(self.store.for_kind(task.record_kind))
        reads_train = cohort == "train" or task.evaluation_reads_training_data
        train = gate.admit(config.study_id, config.block, cohort="train", fields=task.fields) if reads_train else None
        admitted = train if cohort == "train" else gate.admit(config.study_id, config.block, cohort=cohort, fields=task.fields)
        if not admitted.pseudonyms:
            raise Refusal(protocol.NO_CONSENTED_PATIENTS, f"no {cohort} patient holds consent at block {config.block}")
        return terms, task, train, admitted

    def _record_usage(self, config: RoundConfig, phase: str, used: list[bytes]) -> bytes:
        commitment = pseudonym_commitment(used)
        self.store.record_usage(
            RoundUsage(
                study_id=str(config.study_id),
                round=config.round,
                phase=phase,
                block=config.block,
                commitment=str(commitment),
                pseudonyms=json.dumps(sorted(hex0x(p) for p in used)),
            )
        )
        return commitment

    def train(self, config: RoundConfig, global_state: dict[str, torch.Tensor]) -> TrainOutcome:
        # Opacus takes seconds to import; every Flower message starts a fresh process, and only training needs it.
        from node.privacy import BudgetSpent, PrivacyBudget
        from node.trainer import train_private

        terms, task, train, _ = self._admit(config, "train")
        study = str(config.study_id)
        if terms.epsilon_budget >= protocol.NON_PRIVATE_EPSILON:  # _admit let it through: this node opted in
            return self._train_non_private(config, terms, task, train, global_state)
        budget = PrivacyBudget(self.store, study_id=study, epsilon_budget=terms.epsilon_budget, delta=terms.delta)
        if config.round in budget.rounds_trained():
            raise Refusal(protocol.BAD_REQUEST, f"round {config.round} was already trained here: replayed request")
        features, labels = task.training_examples(train.records)
        shift, scale = task.normaliser(features)
        features = ((features - shift) / scale).astype("float32")
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

        study = str(config.study_id)
        if any(u.round == config.round and u.phase == "train" for u in self.store.usage(study)):
            raise Refusal(protocol.BAD_REQUEST, f"round {config.round} was already trained here: replayed request")
        features, labels = task.training_examples(train.records)
        shift, scale = task.normaliser(features)
        model = task.build_model()
        model.load_state_dict(global_state)
        result = train_plain(
            model, task.loss, ((features - shift) / scale).astype("float32"), labels, epochs=config.local_epochs,
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
        features, labels = task.evaluation_examples(test.records)
        used = list(test.pseudonyms)
        if task.evaluation_reads_training_data:
            if not train.pseudonyms:
                raise Refusal(protocol.NO_CONSENTED_PATIENTS, "no consented training patients to standardise with")
            shift, scale = task.normaliser(task.training_examples(train.records)[0])
            # Evaluation reads the training patients too (for the normalisation): both are recorded.
            used += train.pseudonyms
        else:
            shift, scale = task.normaliser(features)
        model = task.build_model()
        model.load_state_dict(global_state)
        sums = task.evaluation_sums(model, ((features - shift) / scale).astype("float32"), labels)
        metrics = task.summarise(sums)
        commitment = self._record_usage(config, "evaluate", used)
        self._keep_model(config, task, global_state, shift, scale)
        log.info(
            "%s round %d: evaluated on %d consented test patients at block %d: %s %s",
            self.settings.hospital, config.round, len(test.pseudonyms), config.block, task.headline.name,
            f"{metrics.get(task.headline.name, float('nan')):.3f}",
        )
        return EvaluateOutcome(len(test.pseudonyms), sums, metrics, commitment, len(used))

    def _keep_model(self, config: RoundConfig, task, global_state, shift, scale) -> None:
        """Keep the round's global model and the normaliser this evaluation used (node/models_store.py), for the
        twins. Reached only after the consent-checked evaluation succeeded; a failure to write is logged, not raised:
        the coordinator's reply does not depend on it."""
        try:
            save_model(self.settings.home, task_id=task.task_id, study_id=str(config.study_id),
                       round=config.round, block=config.block, state=global_state, shift=shift, scale=scale)
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk
            log.warning("%s round %d: could not keep the global model: %s", self.settings.hospital, config.round, exc)
