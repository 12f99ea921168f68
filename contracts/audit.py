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
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from contracts.ledger import Ledger
from federation.commitment import combined_commitment, pseudonym_commitment
from federation.ids import Pseudonym, StudyId


@dataclass
class AuditResult:
    violations: int = 0
    checked: int = 0
    rounds: int = 0
    commitment_mismatches: int = 0
    unanchored_phases: int = 0  # consent-checked use whose reply never reached the coordinator (see above)
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


def audit_study(ledger: Ledger, study_id: bytes, usage_logs: dict[str, dict]) -> AuditResult:
    result = AuditResult()
    study_hex = str(StudyId(study_id))
    for anchor in ledger.round_anchors(study_id):
        result.rounds += 1
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
