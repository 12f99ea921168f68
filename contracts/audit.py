"""Independent audit of a study's rounds against the chain.

For every round anchored on chain and every hospital in it, the auditor takes the pseudonym sets the
hospital's usage log lists, checks that they hash to the commitment the anchor holds, and asks the chain
(not the node) whether each pseudonym held consent at the round's pinned block. Every used pseudonym
without consent at that block, every missing or mismatched commitment, and every usage at a block
other than the pinned one counts as a violation.

One mismatch has an innocent explanation and is reported apart, not as a violation: the anchor holds
exactly the hospital's logged training set and an empty evaluation (or the reverse), while its log also
lists the other phase. That is a node whose reply was lost (it died, or lost its connection, after using
the data and before the coordinator heard back): the phase is not in the anchor, and the auditor still
checks every pseudonym of it for consent at the pinned block. Any other difference remains a violation.

Given the coordinator's run report (report.json), the auditor also verifies the hospitals' signed replies it
keeps for each round (coordinator/study_run.py): for every hospital an anchor names, a reply it signed must be
there, its signature must recover to that hospital (a forged or swapped signature is a violation), it must
answer the anchored round (study, round, pinned block), the commitments it signed must combine to the
anchored one, and the evaluated model must be the anchored model. So the coordinator cannot anchor a
commitment for a hospital that never signed it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from contracts.ledger import Ledger, RoundAnchor, recover_round_reply
from federation.commitment import combined_commitment, pseudonym_commitment
from federation.ids import Pseudonym, StudyId, from_hex0x
from federation.protocol import RoundReply


@dataclass
class AuditResult:
    violations: int = 0
    checked: int = 0
    rounds: int = 0
    commitment_mismatches: int = 0
    unanchored_phases: int = 0  # consent-checked use whose reply never reached the coordinator (see above)
    signatures_checked: int = 0  # signed replies verified against the report (0 without a report)
    findings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def load_usage_logs(paths: list[Path]) -> dict[str, dict]:
    """Usage logs exported by nodes (`twinledger node export-usage`), keyed by hospital account."""
    logs = {}
    for path in paths:
        document = json.loads(Path(path).read_text())
        logs[document["account"]] = document
    return logs


def load_report(report: Any) -> dict:
    """A run report as a dict: from a path to report.json, a dict, or an object with `as_dict()`."""
    if report is None or isinstance(report, Mapping):
        return dict(report or {})
    if hasattr(report, "as_dict"):
        return report.as_dict()
    return json.loads(Path(report).read_text(encoding="utf-8"))


def audit_study(ledger: Ledger, study_id: bytes, usage_logs: dict[str, dict], *, report: Any = None) -> AuditResult:
    """Audit every anchored round of a study against the hospitals' usage logs and the chain; with `report`
    (the coordinator's report.json, as a path or dict) also the signed replies it keeps."""
    result = AuditResult()
    study_hex = str(StudyId(study_id))
    records = {r.get("round"): r for r in load_report(report).get("rounds") or [] if isinstance(r, Mapping)}
    for anchor in ledger.round_anchors(study_id):
        result.rounds += 1
        if report is not None:
            _audit_signed_replies(ledger, anchor, records.get(anchor.round), result)
        for account, anchored in anchor.commitments.items():
            log = usage_logs.get(account)
            name = log["hospital"] if log else account
            if log is None:
                result.violations += 1
                result.findings.append(f"round {anchor.round}: no usage log from {account}")
                continue
            entries = {
                e["phase"]: e for e in log["entries"] if e["study_id"] == study_hex and e["round"] == anchor.round
            }
            used: set[bytes] = set()
            phase_commitments = {}
            for phase in ("train", "evaluate"):
                entry = entries.get(phase)
                if entry is None:
                    phase_commitments[phase] = b""
                    continue
                pseudonyms = [Pseudonym.parse(p) for p in entry["pseudonyms"]]
                phase_commitments[phase] = pseudonym_commitment(pseudonyms)
                if str(phase_commitments[phase]) != entry["commitment"]:
                    result.commitment_mismatches += 1
                    result.findings.append(f"round {anchor.round} {name} {phase}: logged commitment does not match its pseudonyms")
                if entry["block"] != anchor.pinned_block:
                    result.violations += 1
                    result.findings.append(
                        f"round {anchor.round} {name} {phase}: used block {entry['block']}, pinned {anchor.pinned_block}"
                    )
                used.update(pseudonyms)
            if combined_commitment(phase_commitments["train"], phase_commitments["evaluate"]) != anchored:
                lost = _lost_phase(phase_commitments, anchored)
                if lost:
                    result.unanchored_phases += 1
                    result.findings.append(
                        f"round {anchor.round} {name} {lost}: logged but not anchored (the node's reply never reached "
                        "the coordinator); its patients are still checked for consent below"
                    )
                else:
                    result.commitment_mismatches += 1
                    result.violations += 1
                    result.findings.append(
                        f"round {anchor.round} {name}: the usage log does not match the anchored commitment"
                    )
            ordered = sorted(used)
            consented = ledger.consents(study_id, ordered, block=anchor.pinned_block)
            result.checked += len(ordered)
            for pseudonym, held in zip(ordered, consented):
                if not held:
                    result.violations += 1
                    result.findings.append(
                        f"round {anchor.round} {name}: {pseudonym.short(10)} used without consent at block {anchor.pinned_block}"
                    )
    return result


def _lost_phase(phase_commitments: dict[str, bytes], anchored: bytes) -> str | None:
    """The phase the log lists but the anchor left out as empty, when that alone explains the difference."""
    train, evaluate = phase_commitments["train"], phase_commitments["evaluate"]
    if evaluate and combined_commitment(train, b"") == anchored:
        return "evaluate"
    if train and combined_commitment(b"", evaluate) == anchored:
        return "train"
    return None


def _audit_signed_replies(ledger: Ledger, anchor: RoundAnchor, record: Mapping | None, result: AuditResult) -> None:
    """Every hospital an anchor names signed what the anchor holds for it (see the module's docstring)."""
    where = f"round {anchor.round}"

    def violation(text: str) -> None:
        result.violations += 1
        result.findings.append(f"{where}: {text}")

    if record is None:
        if anchor.commitments:
            violation("anchored, but the report has no record of the round")
        return
    signed: dict[str, dict[str, RoundReply]] = {}
    for stored in record.get("replies") or []:
        try:
            reply = RoundReply.from_dict(stored["reply"])
            claimed = str(stored["hospital"])
            signer = recover_round_reply(ledger.deployment, reply, from_hex0x(str(stored["signature"])))
        except (KeyError, TypeError, ValueError) as exc:
            violation(f"a stored reply is malformed or its signature unreadable ({exc})")
            continue
        result.signatures_checked += 1
        if signer != claimed:
            violation(f"the reply stored for {claimed} ({reply.phase}) is not signed by it (the signature recovers "
                      f"to {signer})")
            continue
        if (reply.study_id, reply.round, reply.pinned_block) != (anchor.study_id, anchor.round, anchor.pinned_block):
            violation(f"{claimed}'s {reply.phase} reply answers study {reply.study_id.short()} round {reply.round} at "
                      f"block {reply.pinned_block}, not the anchored round (pinned block {anchor.pinned_block})")
            continue
        if reply.phase == "evaluate" and reply.model_digest != anchor.model_hash:
            violation(f"{claimed} evaluated model {reply.model_digest.short()}, the anchor holds "
                      f"{anchor.model_hash.short()}")
        signed.setdefault(claimed, {})[reply.phase] = reply
    for account, anchored in anchor.commitments.items():
        phases = signed.get(account, {})
        if not phases:
            violation(f"the anchor names {account}, which signed no reply in the round")
            continue
        train, evaluate = phases.get("train"), phases.get("evaluate")
        combined = combined_commitment(train.commitment if train else b"", evaluate.commitment if evaluate else b"")
        if combined != anchored:
            violation(f"the anchored commitment of {account} is not the one its signed replies hold")
