"""What a hospital node does in a round: gate, budget, train or evaluate, record, reply.

This is the node's core, free of Flower: client_app.py only turns messages into calls here and back.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import torch

from contracts.ledger import ChainReset, Ledger, LedgerError
from federation import monitoring, protocol
from federation.commitment import pseudonym_commitment
from federation.ids import Pseudonym
from federation.protocol import RoundConfig
from federation.tasks import get_task
from node import spending
from node.consent_gate import ConsentGate, Refusal
from node.models_store import save_model
from node.settings import NodeSettings
from node.store import USAGE_COMPLETED, USAGE_VOIDED, RoundUsage, Store
from node.trainer import steps_per_epoch
from node.vault import Vault, VaultError

log = logging.getLogger("twinledger.node")


@dataclass
class TrainOutcome:
    state: dict[str, torch.Tensor]
    num_examples: int  # the aggregation weight: the noisy training count (exact for a non-private study)
    epsilon_spent: float
    epsilon_budget: float
    commitment: bytes
    mean_loss: float  # for the node's own log: not sent (it is not a charged release)


@dataclass
class EvaluateOutcome:
    num_examples: int  # examples evaluated, from the noisy count sum (exact for a non-private study)
    sums: dict[str, float]  # the task's additive statistics (federation/tasks/base.py), noised, added up by the coordinator
    metrics: dict[str, float]  # this node's own metrics from those sums, for its log
    commitment: bytes
    consented: int  # the same noisy count (kept for replies' readers): exact counts are never sent
    epsilon_spent: float = 0.0  # the study's epsilon at this node after this release (infinity: non-private)

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
        if not self.settings.hospital_key_file.exists():  # not the chain's fault: say so (issue 15)
            raise Refusal(protocol.HOSPITAL_KEY_MISSING, f"no data used: the hospital's key "
                          f"{self.settings.hospital_key_file} is missing: restore it from the node home's backup")
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

    def _check(self, config: RoundConfig):
        """The study's terms, its task and a gate over the patients of the kind the task reads; a Refusal when
        this node may not work on the round. Nothing is read yet."""
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
        return terms, task, self._gate(self.store.for_kind(task.record_kind))

    @contextmanager
    def _reading(self, config: RoundConfig, cohort: str, task, gate: ConsentGate):
        """Read the consented patients of `cohort` (and the training ones, if the phase reads them) write-ahead:
        consent is checked, the intent to read exactly those pseudonyms is written to the usage log, and only then
        are their records decrypted. Yields (train, admitted, commitment); the intent is completed when the block
        ends, voided when it raises (an intent left as it is: the node stopped while using the records)."""
        reads_train = cohort == "train" or task.evaluation_reads_training_data
        train_patients = gate.consented(config.study_id, config.block, cohort="train") if reads_train else []
        patients = train_patients if cohort == "train" else gate.consented(config.study_id, config.block, cohort=cohort)
        if not patients:
            raise Refusal(protocol.NO_CONSENTED_PATIENTS, f"no {cohort} patient holds consent at block {config.block}")
        read = sorted({p.pseudonym for p in patients} | {p.pseudonym for p in train_patients})
        commitment = pseudonym_commitment(Pseudonym.parse(p) for p in read)
        phase = "train" if cohort == "train" else "evaluate"
        usage_id = self.store.record_intent(RoundUsage(
            study_id=str(config.study_id), round=config.round, phase=phase, block=config.block,
            commitment=str(commitment), pseudonyms=json.dumps(read)))
        try:
            train = gate.open_records(config.study_id, config.block, train_patients, fields=task.fields) \
                if reads_train else None
            admitted = train if cohort == "train" else gate.open_records(
                config.study_id, config.block, patients, fields=task.fields)
            yield train, admitted, commitment
        except Exception:
            self._settle(usage_id, USAGE_VOIDED)
            raise
        self._settle(usage_id, USAGE_COMPLETED)

    def _settle(self, usage_id: int, status: str) -> None:
        try:
            self.store.settle_usage(usage_id, status=status)
        except Exception as exc:  # noqa: BLE001 - the intent stays: the audit still sees the read
            log.error("%s: could not mark usage entry %d %s (it stays an intent): %s",
                      self.settings.hospital, usage_id, status, exc)

    def train(self, config: RoundConfig, global_state: dict[str, torch.Tensor]) -> TrainOutcome:
        # Opacus takes seconds to import; every Flower message starts a fresh process, and only training needs it.
        from node.privacy import PrivacyBudget

        terms, task, gate = self._check(config)
        if terms.epsilon_budget >= protocol.NON_PRIVATE_EPSILON:  # _check let it through: this node opted in
            return self._train_non_private(config, terms, task, gate, global_state)
        if terms.evaluation_share <= 0:  # no room for the noisy count a train reply carries: fail closed
            raise Refusal(protocol.BUDGET_SPENT, "no data used: the study records no evaluation share of its budget "
                                                 "(proposed before the share existed); propose it again")
        if task.sensitivity_bound is None:  # a loss that may couple patients, with no bound measured: fail closed
            raise Refusal(protocol.STUDY_NOT_ACCEPTED, f"no data used: task {task.task_id} declares no sensitivity "
                                                       "bound; DP-SGD's noise cannot be calibrated to it")
        budget = self._planned_budget(config, terms)
        if config.round in budget.rounds_trained():
            raise Refusal(protocol.BAD_REQUEST, f"round {config.round} was already trained here: replayed request")
        spending.check(self, config, budget)
        with self._reading(config, "train", task, gate) as (train, _, commitment):
            return self._train_private(config, terms, task, budget, train, commitment, global_state)

    def _train_private(self, config: RoundConfig, terms, task, budget, train, commitment, global_state) -> TrainOutcome:
        from node.privacy import BudgetSpent
        from node.trainer import train_private

        features, labels = task.training_examples(self._one_per_person(train))
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
            sensitivity_bound=task.sensitivity_bound,
        )
        epsilon = budget.record(config.round, result.steps_taken)
        weight, epsilon = self._training_weight(budget, config.round, task.training_weight(train.records), epsilon)
        monitoring.epsilon_spent(config.study_id, epsilon)
        spending.record(self, config, epsilon)
        log.info(
            "%s round %d: trained on %d consented patients at block %d, noise %.2f, epsilon %.3f of %g "
            "(weight sent: %d, noisy)",
            self.settings.hospital, config.round, len(labels), config.block, plan.noise_multiplier, epsilon,
            terms.epsilon_budget, weight,
        )
        return TrainOutcome(result.state, weight, epsilon, terms.epsilon_budget, commitment, result.mean_loss)

    def _planned_budget(self, config: RoundConfig, terms):
        """The study's privacy account with its number of evaluations fixed (the run's declaration, checked
        against the one fixed before): a Refusal, no data used, when they differ."""
        from node.privacy import PlanConflict, PrivacyBudget

        budget = PrivacyBudget.of_study(self.store, terms)
        try:
            budget.bind(config.evaluations, round_number=config.round)
        except PlanConflict as exc:
            raise Refusal(protocol.BAD_REQUEST, f"no data used: {exc}") from exc
        return budget

    def _training_weight(self, budget, round_number: int, patients: int, epsilon: float) -> tuple[int, float]:
        """The count of training patients this node sends as its aggregation weight: noised and charged once per
        study (a "count" release), then reused (post-processing costs nothing). Returns it and epsilon after."""
        from node.privacy import BudgetSpent, secure_gaussian

        released = budget.released("count")
        if released:
            return max(1, round(released[0].value)), epsilon
        noisy = patients + secure_gaussian(budget.release_noise())  # one patient moves the count by 1
        try:
            epsilon = budget.charge(round_number, "count", value=noisy)
        except BudgetSpent as exc:  # the planner kept room for it: only a study without evaluation share
            raise Refusal(protocol.BUDGET_SPENT, f"the trained model was not sent: {exc}") from exc
        return max(1, round(noisy)), epsilon

    def _train_non_private(self, config: RoundConfig, terms, task, gate, global_state) -> TrainOutcome:
        """Plain SGD for a study recorded as non-private; epsilon is reported as infinity (no DP guarantee)."""
        study = str(config.study_id)
        if any(u.round == config.round and u.phase == "train" for u in self.store.usage(study)):
            raise Refusal(protocol.BAD_REQUEST, f"round {config.round} was already trained here: replayed request")
        with self._reading(config, "train", task, gate) as (train, _, commitment):
            return self._train_plain(config, terms, task, train, commitment, global_state)

    def _train_plain(self, config: RoundConfig, terms, task, train, commitment, global_state) -> TrainOutcome:
        from node.trainer import train_plain

        features, labels = task.training_examples(train.records)
        shift, scale = task.normaliser(features)
        model = task.build_model()
        model.load_state_dict(global_state)
        result = train_plain(
            model, task.loss, ((features - shift) / scale).astype("float32"), labels, epochs=config.local_epochs,
            learning_rate=config.learning_rate, batch_size=config.batch_size,
        )
        log.info(
            "%s round %d: trained WITHOUT differential privacy (non-private study) on %d consented patients at block %d",
            self.settings.hospital, config.round, len(labels), config.block,
        )
        return TrainOutcome(result.state, task.training_weight(train.records), math.inf, terms.epsilon_budget, commitment,
                            result.mean_loss)

    def evaluate(self, config: RoundConfig, global_state: dict[str, torch.Tensor]) -> EvaluateOutcome:
        """Evaluate the round's global model once: only round 1..R of the study at the block its training pinned,
        and what is released is a charged Gaussian release of the task's per-patient-clipped sums."""
        study = str(config.study_id)
        # An intent left by a node that stopped while evaluating counts as an evaluation: it may have been released.
        usage = [u for u in self.store.usage_log(study) if u.round == config.round and u.status != USAGE_VOIDED]
        if any(u.phase == "evaluate" for u in usage):
            raise Refusal(protocol.BAD_REQUEST, f"no data used: round {config.round} was already evaluated here; "
                                                "a round is evaluated once")
        trained_at = {u.block for u in usage if u.phase == "train"}
        if trained_at and config.block not in trained_at:
            raise Refusal(protocol.BAD_REQUEST, f"no data used: round {config.round} trained at block "
                                                f"{min(trained_at)}; its evaluation must read the same block, not "
                                                f"{config.block}")
        terms, task, gate = self._check(config)
        budget = None  # a non-private study's evaluation charges no account
        if terms.epsilon_budget < protocol.NON_PRIVATE_EPSILON:
            budget = self._planned_budget(config, terms)
            if not budget.evaluations_left():  # refused before any record is read
                raise Refusal(protocol.BUDGET_SPENT, f"no data used: the study's {budget.evaluations} planned "
                                                     "evaluation(s) were all released here")
            spending.check(self, config, budget)
        with self._reading(config, "test", task, gate) as (train, test, commitment):
            return self._evaluate(config, budget, task, train, test, commitment, global_state)

    def _evaluate(self, config: RoundConfig, budget, task, train, test, commitment, global_state) -> EvaluateOutcome:
        private = budget is not None
        if task.evaluation_reads_training_data:  # a task whose normaliser is fitted on training patients
            if not train.pseudonyms:
                raise Refusal(protocol.NO_CONSENTED_PATIENTS, "no consented training patients to standardise with")
            shift, scale = task.normaliser(task.training_examples(train.records)[0])
        else:
            shift, scale = task.normaliser(task.evaluation_examples(test.records)[0])
        model = task.build_model()
        model.load_state_dict(global_state)
        sums = self._clipped_sums(task, model, self._one_per_person(test) if private else test.records, shift, scale)
        epsilon = math.inf
        if private:
            sums, epsilon = self._release(budget, config.round, task, sums)
            monitoring.epsilon_spent(config.study_id, epsilon)
            spending.record(self, config, epsilon)
        count = max(0, round(sums[task.evaluation_count_key]))
        metrics = task.summarise(sums)
        self._keep_model(config, task, global_state, shift, scale)
        log.info(
            "%s round %d: evaluated on %d consented test patients at block %d: %s %s%s",
            self.settings.hospital, config.round, len(test.pseudonyms), config.block, task.headline.name,
            f"{metrics.get(task.headline.name, float('nan')):.3f}", " (noisy)" if private else "",
        )
        return EvaluateOutcome(count, sums, metrics, commitment, count, epsilon)

    def _one_per_person(self, admitted) -> list[dict]:
        """One record of each person among the admitted (node/privacy.py one_record_per_person)."""
        import secrets

        from node.privacy import one_record_per_person

        persons = self.store.persons_of(admitted.pseudonyms)
        chosen = one_record_per_person([persons[str(p)] for p in admitted.pseudonyms], salt=secrets.token_hex(16))
        return [admitted.records[i] for i in chosen]

    @staticmethod
    def _clipped_sums(task, model, records: list[dict], shift, scale) -> dict[str, float]:
        """The task's evaluation sums, each patient's contribution clipped to [0, the task's bound]."""
        bounds = task.release_bounds  # the task's sums and its subgroups' (federation/tasks/base.py)
        total = dict.fromkeys(bounds, 0.0)
        for record in records:
            features, labels = task.patient_evaluation_examples(record)
            patient = task.patient_release_sums(model, ((features - shift) / scale).astype("float32"), labels, record)
            if set(patient) != set(bounds):  # a sum without a bound is never released
                raise Refusal(protocol.BAD_REQUEST, f"task {task.task_id}'s sums {sorted(patient)} do not match "
                                                    f"its bounds {sorted(bounds)}: nothing released")
            for key, bound in bounds.items():
                total[key] += min(max(float(patient[key]), 0.0), bound)
            for partition in task.release_partitions:  # the noise assumes one block per patient: enforce it
                if sum(any(patient[key] > 0 for key in block) for block in partition) > 1:
                    raise Refusal(protocol.BAD_REQUEST, f"task {task.task_id}: a patient adds to two blocks of a "
                                                        "partition of its sums: nothing released")
        return total

    def _release(self, budget, round_number: int, task, sums: dict[str, float]) -> tuple[dict[str, float], float]:
        """The Gaussian release of the sums, charged first to the study's planned account (`_planned_budget`)."""
        from node.privacy import BudgetSpent, noisy_sums

        try:
            epsilon = budget.charge(round_number, "evaluate")
        except BudgetSpent as exc:
            raise Refusal(protocol.BUDGET_SPENT, f"nothing released: {exc}") from exc
        return noisy_sums(sums, task.release_bounds, noise_multiplier=budget.release_noise(),
                          partitions=task.release_partitions), epsilon

    def epsilon_spent(self, study_id) -> float:
        """The epsilon this node's own privacy account says it spent on the study (infinity once it trained a
        non-private study): what the run's report shows, whatever replies were lost."""
        study = str(study_id)
        spends = self.store.spends(study)
        if spends:
            return spends[-1].epsilon_after
        return math.inf if any(u.phase == "train" for u in self.store.usage(study)) else 0.0

    def _keep_model(self, config: RoundConfig, task, global_state, shift, scale) -> None:
        """Keep the round's global model and the normaliser this evaluation used (node/models_store.py), for the
        twins. Reached only after the consent-checked evaluation succeeded; a failure to write is logged, not raised:
        the coordinator's reply does not depend on it."""
        try:
            save_model(self.settings.home, task_id=task.task_id, study_id=str(config.study_id),
                       round=config.round, block=config.block, state=global_state, shift=shift, scale=scale)
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk
            log.warning("%s round %d: could not keep the global model: %s", self.settings.hospital, config.round, exc)
