"""The shape every federated task has: what the node's and the coordinator's core call, and nothing else.

A task turns the records the consent gate admitted into examples and their normalisation, builds its
model, defines its loss, and evaluates a model as additive sums that the coordinator adds up over the
nodes and turns into metrics (every metric is therefore weighted by examples, and exact: an RMSE is the
root of the pooled mean squared error, not a mean of the nodes' RMSEs). docs/tasks.md explains how to
add one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from federation.tasks.data_path import DemoData, RecordFileError, RecordReader, Subgroup
from federation.tasks.standardise import standardise

# Metric keys of an evaluate reply that belong to the protocol, not to any task.
RESERVED_METRIC_KEYS = frozenset({"num-examples", "consented", "epsilon"})


@dataclass(frozen=True)
class Metric:
    """How a run report and its page show a task's headline metric: what it is, how it is computed over the
    hospitals, its range and chance level, and how precisely to print it."""

    name: str  # key in a round's "metrics", e.g. "accuracy" or "rmse_30min_mgdl"
    label: str  # for people, e.g. "Test accuracy"
    unit: str = ""  # as shown, e.g. "%" or "mg/dL"
    scale: float = 1.0  # shown value = value * scale (accuracy 0.8 is shown as 80 %)
    higher_is_better: bool = True
    decimals: int = 1  # of the shown value (a concordance index needs 3: 0.515, not 0.5)
    low: float | None = None  # the range the value can take (unscaled), e.g. 0 and 1; None: unbounded
    high: float | None = None
    chance: float | None = None  # what a model without information scores (unscaled), e.g. 0.5 for a C-index
    # How the value is computed over the hospitals: POOLED (from every node's additive sums added up: as if the
    # test sets were pooled), STRATIFIED (pairs or terms counted within each hospital, then added up) or
    # MEAN_OVER_HOSPITALS (each hospital's value from its own sums, then their unweighted mean).
    pooling: str = "pooled test set"
    description: str = ""  # one line saying what the value is, for the report page's legend

    def as_dict(self) -> dict:
        return asdict(self)

    def shown(self, value: float | None) -> str:
        """The value as people read it: scaled, to `decimals` places, with its unit."""
        if value is None:
            return "—"
        unit = self.unit if self.unit in ("", "%") else f" {self.unit}"
        return f"{value * self.scale:.{self.decimals}f}{unit}"


POOLED, STRATIFIED, MEAN_OVER_HOSPITALS = "pooled test set", "stratified by hospital", "mean over hospitals"


class FederatedTask:
    """Base of every task. Subclasses set the class attributes and implement the methods that raise."""

    task_id: str  # as recorded on chain in the study, e.g. "heart-disease/v1"
    purpose: str  # HL7 v3 PurposeOfUse code a study of this task must carry, e.g. "HRESCH"
    record_kind: str  # which of a node's patients it reads (node/store.py Patient.kind), e.g. "heart-disease"
    fields: tuple[str, ...]  # the fields of a patient record the task reads; the gate passes only these
    headline: Metric  # the metric a report leads with
    report_keys: tuple[str, ...] = ()  # metrics also written at the top level of a round's report record
    # Whether evaluation needs the consented training patients too (to fit the normalisation).
    evaluation_reads_training_data: bool = True
    # The sum of the evaluation sums that counts the examples evaluated (the reply's num-examples, noised).
    evaluation_count_key: str = "examples"

    # Its data path (federation/tasks/data_path.py; docs/tasks.md "Adding a condition").
    readers: tuple[RecordReader, ...] = ()  # how the node reads its records, CSV and FHIR
    description: str = ""  # what a study of the task learns, in plain language (the portal, before consent)
    data_read: str = ""  # which of a patient's data it reads, in plain language
    data_categories: dict[str, int] = {}  # on-chain data categories it uses (name -> bit): the console offers them
    demo_data: DemoData | None = None  # files `twinledger study run` and the demo use without --data
    # What FedAvg weighs a hospital's update by (`training_weight`, sent noised): "patients" by default.
    aggregation_weight: str = "patients"
    subgroups: tuple[Subgroup, ...] = ()  # the headline metric is also reported for each group

    # The sums a node releases: the task's evaluation sums and, for each subgroup, the same sums of its patients
    # under "<axis>=<group>/<sum>" (a patient is in at most one group of an axis: a partition, docs/privacy.md).
    @property
    def release_bounds(self) -> dict[str, float]:
        bounds = self.evaluation_bounds
        return {**bounds, **{subgroup_key(s.axis, g, k): b for s in self.subgroups for g in s.groups
                             for k, b in bounds.items()}}

    @property
    def release_partitions(self) -> tuple:
        keys = tuple(self.evaluation_bounds)
        groups = tuple(tuple(tuple(subgroup_key(s.axis, g, k) for k in keys) for g in s.groups) for s in self.subgroups)
        return tuple(self.evaluation_partitions) + groups

    def patient_release_sums(self, model, features, labels, record: dict) -> dict[str, float]:
        """One patient's released sums: `evaluation_sums`, and the same under their subgroup of each axis."""
        sums = self.evaluation_sums(model, features, labels)
        released = dict.fromkeys(self.release_bounds, 0.0)
        released.update(sums)
        for subgroup in self.subgroups:
            group = subgroup.of(record)
            if group in subgroup.groups:
                released.update({subgroup_key(subgroup.axis, group, k): v for k, v in sums.items()})
        return released

    def training_weight(self, records: list[dict]) -> int:
        """The count FedAvg weighs this node's update by: its training patients (default). A task may count
        something else that carries its information (events of survival data), but each patient may add at
        most 1 to it: the node releases it with the noise of a count of patients (node/service.py)."""
        return len(records)

    def split_cohorts(self, clinicals: list[dict], cohort: str | None) -> list[str]:
        """The cohort of each record read from one file ("train", "test" or "incomplete"), in file order:
        `cohort` if given, else "train"; incomplete records "incomplete"."""
        return ["incomplete" if not self.is_complete(c) else cohort or "train" for c in clinicals]

    def check_cohort(self, source: str, cohort: str | None) -> None:
        """Refuse (RecordFileError naming the file) a cohort the task's records cannot take, before reading."""
        if cohort not in (None, "train", "test"):
            raise RecordFileError(f"{source}: cohort must be train or test, not {cohort!r}")

    @property
    def evaluation_bounds(self) -> dict[str, float]:
        """For each evaluation sum, the most one patient can add to it (its sensitivity): the node clips each
        patient's contribution to [0, bound] and noises each sum in proportion (node/privacy.py `noisy_sums`).
        Every evaluation sum must be listed: a sum without a bound is never released."""
        raise NotImplementedError

    # Blocks of evaluation sums of which one patient adds to at most one, per partition: a histogram's cells
    # (blocks of one sum), or the sums of subgroups of one axis. The node refuses to release sums where a patient
    # adds to two blocks of one partition, and noises at the sensitivity this allows: a partition counts as its
    # largest block, not as all its sums (node/privacy.py sums_sensitivity; docs/privacy.md).
    evaluation_partitions: tuple[tuple[tuple[str, ...], ...], ...] = ()

    def patient_evaluation_examples(self, record: dict) -> tuple[np.ndarray, np.ndarray]:
        """One patient's evaluation examples (raw features, labels): the unit whose sums are clipped."""
        return self.evaluation_examples([record])

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def is_complete(self, record: dict) -> bool:
        raise NotImplementedError

    def examples(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Raw features and labels of complete records (callers pass only complete ones)."""
        raise NotImplementedError

    def training_examples(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels for DP-SGD. The first axis is the unit of privacy: one entry per patient,
        so that Poisson sampling, clipping and the accountant all count patients."""
        return self.examples(records)

    def evaluation_examples(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        return self.examples(records)

    def normaliser(self, train_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shift, scale): features are used as (features - shift) / scale. Default: the training patients'
        mean and standard deviation per feature (scale 1 where a feature is constant)."""
        mean, std = standardise(train_features.reshape(-1, train_features.shape[-1]))
        return mean.astype(np.float32), std.astype(np.float32)

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def evaluation_sums(self, model: torch.nn.Module, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Additive statistics of a model on (normalised) examples: the coordinator adds them over nodes."""
        raise NotImplementedError

    def summarise(self, sums: dict[str, float]) -> dict[str, float]:
        """Metrics from sums (one node's, or all nodes' added up); {} when nothing was evaluated."""
        raise NotImplementedError


def subgroup_key(axis: str, group: str, key: str) -> str:
    return f"{axis}={group}/{key}"


def add_sums(replies: list[dict[str, float]]) -> dict[str, float]:
    """Add up the task's sums of several evaluate replies (protocol keys left out)."""
    total: dict[str, float] = {}
    for reply in replies:
        for key, value in reply.items():
            if key not in RESERVED_METRIC_KEYS:
                total[key] = total.get(key, 0.0) + float(value)
    return total


class BinaryClassificationTask(FederatedTask):
    """A task whose model outputs one logit per example and whose label is 0 or 1."""

    headline = Metric("accuracy", "Test accuracy", unit="%", scale=100.0, low=0.0, high=1.0,
                      description="share of test patients classified correctly, over all hospitals' test sets")
    report_keys = ("accuracy", "loss", "constant_accuracy")
    loss_clip = 10.0  # an example's cross-entropy counts at most this much in the loss sum (its sensitivity)

    @property
    def evaluation_bounds(self):
        return {"examples": 1.0, "correct": 1.0, "loss-sum": self.loss_clip, "positives": 1.0}

    @torch.no_grad()
    def evaluation_sums(self, model, features, labels):
        model.eval()
        x, y = torch.from_numpy(features), torch.from_numpy(labels).reshape(-1)
        logits = model(x).reshape(-1)
        losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
        return {
            "examples": len(y),
            "correct": int(((logits > 0).float() == y).sum()),
            "loss-sum": float(losses.clamp(max=self.loss_clip).sum()),
            "positives": int(y.sum()),  # lets the coordinator report a constant predictor
        }

    def summarise(self, sums):
        # Sums may be noisy (differential privacy): metrics are clamped to what they can be.
        n = sums.get("examples", 0)
        if not n or n < 1:
            return {}
        positives = min(max(sums["positives"], 0.0), n)
        return {
            "accuracy": min(max(sums["correct"] / n, 0.0), 1.0),
            "loss": max(sums["loss-sum"] / n, 0.0),
            "constant_accuracy": max(positives, n - positives) / n,
        }
