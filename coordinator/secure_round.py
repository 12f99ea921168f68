"""A round's train and aggregate phases as Flower's SecAgg+ protocol: the coordinator learns only the weighted sum.

Flower 1.41's `SecAggPlusWorkflow` drives the protocol's four stages over the Grid (setup, share keys, collect
masked vectors, unmask); each node's `secaggplus_mod` answers them (node/client_app.py `secure_aggregation`). The
workflow expects a legacy context: its strategy (`RoundStrategy` here) hands out the round's fit instructions (the
round config StudyRun sends, the names of the weights, the global weights) to exactly this round's nodes, and gets
back the unmasked weighted average. In the third stage every node trains as always, multiplies its weights by its
aggregation weight (`num-examples`, the noisy training count) over `max_weight`, quantises and masks them; the
workflow adds the masked vectors up and, in the fourth stage, removes the masks with the nodes' secret shares:
what comes out is sum(w_i * weights_i) / sum(w_i), FedAvg's average, and the strategy of the run (FedAvg, FedAdam,
FedYogi) is then applied to it as to the plain average (`StudyRun.aggregate`).

What the coordinator checks is unchanged, and a reply counts only for the hospital whose node key authenticated:
each masked-vector reply is a signed RoundReply whose `reply_digest` is the digest of the masked vector
(`protocol.masked_digest`), checked before it enters the sum; a reply that fails the check is left out of the sum
as if its node had dropped, and the protocol removes its masks.

Dropouts: a node that stops answering during the protocol is dropped from it; the round goes on while at least
`reconstruction_threshold` nodes answer each stage and MIN_SUMMED masked vectors are in the sum, otherwise it ends with the global model unchanged (reported).
A node that refuses (to train, or at any stage: its app gate, a chain it cannot reach) drops out the same way. Rounds with fewer than MIN_NODES nodes (one hospital) are
aggregated in the clear by StudyRun: a sum of one update is that update.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import TYPE_CHECKING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common import FitIns, Parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

from federation import protocol
from federation.commitment import model_hash
from federation.ids import Digest

if TYPE_CHECKING:
    from coordinator.study_run import RoundState, StudyRun

log = logging.getLogger("twinledger.coordinator")

MIN_NODES = 2  # SecAgg+ needs two; with one node the sum is the update
# Flower 1.41 draws each mask from numpy's RandomState seeded with 32 bits folded from its 32-byte secret. Once the
# sum is unmasked the coordinator knows every sender's private mask, so a vector whose only unknown is one pairwise
# mask (a sum of two) falls to a search of 2**32 seeds. With three or more vectors in the sum each has at least two
# unknown pairwise masks (2**64): a round that started with three or more nodes never unmasks a sum of fewer.
MIN_SUMMED = 3
# Quantisation (SecAgg+ adds integers modulo MODULUS_RANGE): each weight, times w_i / max_weight, is clipped to
# +-CLIPPING_RANGE and rounded stochastically to one of QUANTIZATION_RANGE levels, a step of 2*16/2**24 = 1.9e-6.
# The models are linear with weights of order 1; the error is more than three orders of magnitude below the DP-SGD
# noise in an update (docs/privacy.md). MODULUS_RANGE / QUANTIZATION_RANGE = 256 nodes can be added without overflow.
CLIPPING_RANGE = 16.0
QUANTIZATION_RANGE = 2**24
MODULUS_RANGE = 2**32
MAX_NODES = MODULUS_RANGE // QUANTIZATION_RANGE - 1
DEFAULT_MAX_WEIGHT = 1000.0  # when no node told its patient count


def reconstruction_threshold(nodes: int) -> int:
    """Shares needed to rebuild a node's secrets: half the round's nodes (at least 2). The round survives
    `nodes - threshold` dropouts (2 of 4); fewer than `threshold` nodes colluding with the coordinator learn
    nothing about another node's update."""
    return max(2, math.ceil(nodes / 2))


def max_weight(run: StudyRun, node_ids: list[int]) -> float:
    """The weight SecAgg+ scales each node's by (w_i / max_weight): twice the largest patient count the nodes told
    (a noisy training count is rarely above it; above it SecAgg+ warns and the sum stays exact unless a weight
    times w_i / max_weight passes CLIPPING_RANGE). Kept close to the real weights: the quantisation error of the
    average grows as max_weight / sum(w_i)."""
    patients = [run.hospitals[n].patients for n in node_ids if n in run.hospitals]
    return float(2 * max(patients)) if patients and max(patients) > 0 else DEFAULT_MAX_WEIGHT


def quantisation_error_bound(nodes: int, weights: list[float], weight_bound: float) -> float:
    """Largest error of one coordinate of the unmasked average: every node's rounding error is below one step, and
    the sum is divided by sum(w_i) / max_weight."""
    return nodes * (2 * CLIPPING_RANGE / QUANTIZATION_RANGE) / (sum(weights) / weight_bound)


class RoundStrategy(Strategy):
    """The legacy strategy SecAggPlusWorkflow asks: one round's fit instructions for its nodes, and the average."""

    def __init__(self, fit_config: dict, node_ids: list[int]):
        self.fit_config = fit_config
        self.node_ids = node_ids
        self.average: list | None = None  # the unmasked weighted average, in the order of the weights' names

    def configure_fit(self, server_round, parameters: Parameters, client_manager):
        return [(GridClientProxy(node_id, None, 0), FitIns(parameters, dict(self.fit_config)))
                for node_id in self.node_ids]

    def aggregate_fit(self, server_round, results, failures):
        if results:  # every result carries the same unmasked average (the workflow sets it on each)
            self.average = parameters_to_ndarrays(results[0][1].parameters)
        return None, {}

    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


class RoundWorkflow(SecAggPlusWorkflow):
    """Flower's SecAggPlusWorkflow, except that a node that dropped out before it shared its keys is forgotten.

    Flower 1.41 keeps such a node among the sampled ones and among every node's neighbours, so that in the unmask
    stage it asks the others for shares of its key, which they never received (the node dropped before it sent
    them): the round ended at the first node that refused the setup (seen in the demo: a hospital whose chain is
    unreachable). Nothing of it is in any masked vector (the others add pairwise masks only with nodes whose
    shares they received), so leaving it out is exact; the protocol's messages and cryptography are unchanged."""

    def setup_stage(self, grid, context, state) -> bool:
        return super().setup_stage(grid, context, state) and _forget_dropped(state)

    def share_keys_stage(self, grid, context, state) -> bool:
        return super().share_keys_stage(grid, context, state) and _forget_dropped(state)

    def collect_masked_vectors_stage(self, grid, context, state) -> bool:
        summed = min(MIN_SUMMED, len(self.round_nodes))
        return super().collect_masked_vectors_stage(grid, context, state) and len(state.active_node_ids) >= summed


def _forget_dropped(state) -> bool:
    gone = state.sampled_node_ids - state.active_node_ids
    state.sampled_node_ids = set(state.active_node_ids)
    for node_id in gone:
        state.nid_to_neighbours.pop(node_id, None)
    for neighbours in state.nid_to_neighbours.values():
        neighbours -= gone
    return True


class StageGrid:
    """The Grid as the workflow sees it: each stage's messages go out through StudyRun's own polling, each with the
    round's config record as a plain train message has it (the node's app gate records a refusal under the round
    it names); the masked vectors are checked (signature, round, hospital) before the workflow adds them up, and
    every node that fails a stage is reported by name."""

    def __init__(self, run: StudyRun, state: RoundState, sent: Digest):
        self.run, self.state, self.sent = run, state, sent

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        if not messages:
            return []
        stage = str(messages[0].content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
        node_ids = [m.metadata.dst_node_id for m in messages]
        for message in messages:  # a node that refuses a stage (its app gate) keeps the round's refusal for its IT
            message.content.config_records.setdefault(protocol.ROUND_CONFIG, self.state.config.to_record())
        started = time.monotonic()
        # The round's own deadline (node_set.phase_deadline), not a stage's own timeout: the round ends in time.
        replies = self.run.exchange(messages)
        log.info("round %d: secure aggregation stage %s: %d of %d node(s) answered in %.2f s", self.state.config.round,
                 stage, len(replies), len(messages), time.monotonic() - started)
        if stage == Stage.COLLECT_MASKED_VECTORS:
            # Only verified replies enter the sum; a dropped one is unmasked away like a node that went silent.
            return self.run.count_trained(self.state, node_ids, replies, self.sent, masked=True)
        answered, errors = self.run._split(node_ids, replies, f"secure aggregation ({stage})")
        for name, reason in errors.items():
            self.state.train_errors.setdefault(name, f"secure aggregation ({stage.replace('_', ' ')}): {reason}")
        return answered


def train_and_aggregate(run: StudyRun, state: RoundState, node_ids: list[int], arrays: ArrayRecord) -> ArrayRecord:
    """The round's train and aggregate phases through SecAgg+; the new global model (the old one when the protocol
    ended early, with the reason in the round's errors)."""
    if len(node_ids) > MAX_NODES:
        raise RuntimeError(f"secure aggregation adds at most {MAX_NODES} nodes' updates; {len(node_ids)} were sent")
    names = list(arrays.keys())
    fit_config = {**dict(state.config.to_record()), protocol.WEIGHT_NAMES: json.dumps(names)}
    strategy = RoundStrategy(fit_config, node_ids)
    context = LegacyContext(Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                            strategy=strategy)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: state.config.round})
    context.state.array_records[MAIN_PARAMS_RECORD] = arrays
    threshold = reconstruction_threshold(len(node_ids))
    workflow = RoundWorkflow(
        num_shares=1.0, reconstruction_threshold=threshold, max_weight=max_weight(run, node_ids),
        clipping_range=CLIPPING_RANGE, quantization_range=QUANTIZATION_RANGE, modulus_range=MODULUS_RANGE,
        timeout=run.options.round_timeout_s,
    )
    workflow.round_nodes = list(node_ids)
    workflow(StageGrid(run, state, model_hash(arrays.to_torch_state_dict())), context)
    if strategy.average is None:
        state.train_errors["coordinator"] = (
            f"secure aggregation ended before the sum was unmasked: too few of the {len(node_ids)} nodes answered "
            f"a stage (a sum needs {min(MIN_SUMMED, len(node_ids))} masked vectors and {threshold} nodes' shares); "
            "the global model is unchanged")
        log.warning("round %d: %s", state.config.round, state.train_errors["coordinator"])
        return arrays
    average = ArrayRecord({name: torch.from_numpy(value) for name, value in zip(names, strategy.average, strict=True)})
    # The strategy of the run over the average, as over the plain replies (the average of one reply is itself).
    summed = Message(RecordDict({protocol.WEIGHTS: average, protocol.METRICS: MetricRecord({"num-examples": 1})}),
                     dst_node_id=0, message_type=MessageType.TRAIN)
    return run.aggregate(state, [summed], arrays)
