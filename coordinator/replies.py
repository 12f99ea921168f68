"""The coordinator's check of a node's signed reply (identity from signatures, never from a claim)."""

from __future__ import annotations

import logging
from typing import Callable

from flwr.app import Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from contracts.ledger import Ledger, LedgerError, recover_round_reply
from federation import protocol
from federation.commitment import model_hash
from federation.ids import Digest
from federation.protocol import RoundConfig, RoundReply

log = logging.getLogger("twinledger.coordinator")


class ReplyRejected(Exception):
    """A reply whose signature does not hold: it is dropped and reported with this reason."""


def check_reply(reply: Message, *, phase: str, config: RoundConfig, sent: Digest, ledger: Ledger,
                authenticated: str | None, masked: bool = False) -> tuple[RoundReply, bytes, str]:
    """The signed RoundReply, its signature and the hospital it counts for, when all of them hold for this reply:
    signed by the key that acted for an active hospital at the pinned block (`authenticated`, the hospital the
    node's key names, when known), for this round (study, round, block, phase) and the model `sent`, over the weights or metrics it
    carries (`masked`, a train reply of secure aggregation: over its SecAgg+ masked vector, the only form in
    which its weights leave the hospital), its examples, commitment and epsilon. Raises ReplyRejected with the
    reason otherwise."""
    try:
        usage, metrics = reply.content[protocol.USAGE], reply.content[protocol.METRICS]
        signed = RoundReply.from_record(reply.content[protocol.ROUND_REPLY])
        signature = protocol.reply_signature(usage)
        if signature is None:
            raise ValueError("the usage record carries no signature")
        signer = recover_round_reply(ledger.deployment, signed, signature)
        if phase == "train" and masked:
            carried = protocol.masked_digest(reply.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS])
        elif phase == "train":
            carried = model_hash(reply.content[protocol.WEIGHTS].to_torch_state_dict())
        else:
            carried = protocol.metrics_digest(dict(metrics))
        numbers = {"examples": (int(metrics["num-examples"]), int(usage["used"])),
                   "commitment": Digest.parse(usage["commitment"]),
                   # An evaluate reply without epsilon comes from a node before evaluation was charged.
                   "epsilon": protocol.epsilon_milli(float(metrics["epsilon"]))
                   if phase == "train" or "epsilon" in metrics else 0}
    except (KeyError, ValueError, TypeError) as exc:
        raise ReplyRejected(f"not a signed reply ({exc})") from exc
    if (signed.study_id, signed.round, signed.pinned_block, signed.phase) != (
            config.study_id, config.round, config.block, phase):
        raise ReplyRejected(f"signed for study {signed.study_id.short()} round {signed.round} block "
                            f"{signed.pinned_block} {signed.phase}, not this round's {phase}")
    if signed.model_digest != sent:
        raise ReplyRejected("signed for another model than the one sent this round")
    if signed.reply_digest != carried:
        what = "masked vector is" if masked else "weights are" if phase == "train" else "metrics are"
        raise ReplyRejected(f"its {what} not the one{'' if masked else 's'} signed")
    if any(count != signed.num_examples for count in numbers["examples"]):
        raise ReplyRejected(f"it reports {numbers['examples'][0]} examples, its hospital signed "
                            f"{signed.num_examples}")
    if numbers["commitment"] != signed.commitment:
        raise ReplyRejected("its commitment is not the one signed")
    if numbers["epsilon"] != signed.epsilon_milli:
        raise ReplyRejected("its epsilon is not the one signed")
    try:
        # The key that signed must act for the hospital at the pinned block: a rotated-away key signs for nobody.
        hospital = ledger.hospital_of(signer, block=config.block)
        active = hospital is not None and ledger.is_active_hospital(hospital, block=config.block)
    except LedgerError as exc:
        raise ReplyRejected(f"the signer's standing could not be read from the chain: {exc}") from exc
    if authenticated is not None and hospital != authenticated:
        raise ReplyRejected(f"signed by {signer}, but the node authenticated as hospital {authenticated}'s node")
    if not active:
        raise ReplyRejected(f"signed by {signer}, which is not an active hospital's key at block {config.block}")
    return signed, signature, hospital


def split_replies(node_ids: list[int], replies: list[Message], phase: str, *, name_of: Callable[[int], str],
                  timeout_s: float) -> tuple[list[Message], dict[str, str]]:
    """The replies with content, and a reason by hospital name (`name_of` a node id) for every node that refused
    or was silent."""
    ok, errors = [], {}
    answered = set()
    for reply in replies:
        node_id = reply.metadata.src_node_id
        answered.add(node_id)
        if reply.has_error():
            code = reply.error.code
            reason = reply.error.reason or "no reason given"
            errors[name_of(node_id)] = f"{protocol.ERROR_NAMES.get(code, f'error {code}')}: {reason}"
            log.warning("%s did not %s: %s", name_of(node_id), phase, errors[name_of(node_id)])
        else:
            ok.append(reply)
    for node_id in set(node_ids) - answered:
        errors[name_of(node_id)] = f"no reply within {timeout_s:g} s (node down?)"
        log.warning("%s did not reply to %s", name_of(node_id), phase)
    return ok, errors
