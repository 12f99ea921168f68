"""Independent audit of a study's uses of patient data against the chain.

The auditor reads every hospital's usage log in full (`twinledger node export-usage`): a node writes an entry
as an intent before it decrypts anything and completes or voids it after (node/store.py), so the log names
every pseudonym the node read, whether or not its reply reached the coordinator. The audit then

- for every round anchored on chain and every hospital in it, checks that the hospital's completed entries hash
  to the commitment the anchor holds, and that they used the round's pinned block;
- lists every entry the anchors do not hold, in `unanchored`: a reply lost after the node used the data (its
  ClientApp or SuperNode died, its connection dropped), a round never anchored (the SuperLink died), a read that
  never completed (the node died while using the data: status "intent"), a read the node voided after it;
- asks the chain (not the node) whether each pseudonym of every entry, anchored or not, held consent at the
  entry's block. A pseudonym read without consent is a violation.

`violations` counts uses without consent, and what makes the anchors untrustworthy: a mismatched commitment,
a use at a block other than the pinned one, a hospital an anchor names without a usage log, and (with the run
report) a signed reply that does not hold. An unanchored use with consent is listed, not counted. One
mismatch has an innocent explanation and is listed as an unanchored phase, not a violation: the anchor holds
exactly the hospital's training set and an empty evaluation (or the reverse), while its log also lists the
other phase. A pseudonym whose consent the chain node can no longer answer (a node restarted from a state
file keeps no earlier states, docs/operations.md) counts in `unverified`, with a finding.

An entry from which the node redacted erased patients (node/erase.py: their pseudonyms dropped after the chain
showed their consent at the entry's block) lists them in `redacted`: its commitment cannot be recomputed, so its
stored commitment is what must match the anchor; its remaining pseudonyms are checked as above; its erased
patients count in `erased_uses`, neither checked nor unverified nor violations: the node's word, given when it
verified them on chain at erasure (a redaction at a block other than the entry's is a violation).

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

from contracts.ledger import Ledger, RoundAnchor, StateUnavailable, recover_round_reply
from federation.commitment import combined_commitment, pseudonym_commitment
from federation.ids import Digest, Pseudonym, StudyId, from_hex0x
from federation.protocol import RoundReply


@dataclass
class AuditResult:
    violations: int = 0
    checked: int = 0
    rounds: int = 0
    commitment_mismatches: int = 0
    unanchored_phases: int = 0  # consent-checked uses no anchor holds, voided reads aside (see above)
    signatures_checked: int = 0  # signed replies verified against the report (0 without a report)
    unverified: int = 0  # pseudonyms whose consent the chain node could not answer at their block
    erased_uses: int = 0  # uses of erased patients, consent verified on chain by the node at erasure (see above)
    findings: list[str] = field(default_factory=list)
    # every use the anchors do not hold: hospital, account, round, phase, block, status, patients
    unanchored: list[dict] = field(default_factory=list)

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


COMPLETED = "completed"  # an entry's status (node/store.py); exports made before the write-ahead log had none


def audit_study(ledger: Ledger, study_id: bytes, usage_logs: dict[str, dict], *, report: Any = None) -> AuditResult:
    """Audit every use of a study's data the hospitals' usage logs name, and every anchored round, against the
    chain; with `report` (the coordinator's report.json, as a path or dict) also the signed replies it keeps."""
    result = AuditResult()
    study_hex = str(StudyId(study_id))
    records = {r.get("round"): r for r in load_report(report).get("rounds") or [] if isinstance(r, Mapping)}
    entries = {account: [e for e in log["entries"] if e["study_id"] == study_hex] for account, log in usage_logs.items()}
    names = {account: log.get("hospital", account) for account, log in usage_logs.items()}
    to_check: dict[tuple[str, int, int], set[Pseudonym]] = {}  # (hospital, round, block) -> pseudonyms read
    covered: set[int] = set()  # id() of the log entries an anchor holds
    for anchor in ledger.round_anchors(study_id):
        result.rounds += 1
        if report is not None:
            _audit_signed_replies(ledger, anchor, records.get(anchor.round), result)
        for account, anchored in anchor.commitments.items():
            if account not in usage_logs:
                result.violations += 1
                result.findings.append(f"round {anchor.round}: no usage log from {account}")
                continue
            name = names[account]
            completed = {e["phase"]: e for e in entries[account]
                         if e["round"] == anchor.round and e.get("status", COMPLETED) == COMPLETED}
            phase_commitments = {}
            for phase in ("train", "evaluate"):
                entry = completed.get(phase)
                if entry is None:
                    phase_commitments[phase] = b""
                    continue
                pseudonyms = [Pseudonym.parse(p) for p in entry["pseudonyms"]]
                if entry.get("redacted"):
                    phase_commitments[phase] = Digest.parse(entry["commitment"])  # see the module's docstring
                else:
                    phase_commitments[phase] = pseudonym_commitment(pseudonyms)
                if str(phase_commitments[phase]) != entry["commitment"]:
                    result.commitment_mismatches += 1
                    result.findings.append(f"round {anchor.round} {name} {phase}: logged commitment does not match its pseudonyms")
                if entry["block"] != anchor.pinned_block:
                    result.violations += 1
                    result.findings.append(
                        f"round {anchor.round} {name} {phase}: used block {entry['block']}, pinned {anchor.pinned_block}"
                    )
                to_check.setdefault((account, anchor.round, anchor.pinned_block), set()).update(pseudonyms)
                covered.add(id(entry))
            if combined_commitment(phase_commitments["train"], phase_commitments["evaluate"]) != anchored:
                lost = _lost_phase(phase_commitments, anchored)
                if lost:
                    covered.discard(id(completed[lost]))  # listed below, with the other unanchored uses
                else:
                    result.commitment_mismatches += 1
                    result.violations += 1
                    result.findings.append(
                        f"round {anchor.round} {name}: the usage log does not match the anchored commitment"
                    )
    for account, logged in entries.items():
        for entry in logged:
            status = entry.get("status", COMPLETED)
            if id(entry) in covered:
                continue
            _list_unanchored(account, names[account], entry, status, result)
            pseudonyms = {Pseudonym.parse(p) for p in entry["pseudonyms"]}
            to_check.setdefault((account, entry["round"], entry["block"]), set()).update(pseudonyms)
    for (account, round_number, block), pseudonyms in sorted(to_check.items(), key=lambda item: item[0][1:]):
        _check_consent(ledger, study_id, names[account], round_number, block, sorted(pseudonyms), result)
    for account, logged in entries.items():
        for entry in logged:
            _redactions(entry, f"round {entry['round']} {names[account]} {entry['phase']}", result)
    if result.erased_uses:
        result.findings.append(f"uses of erased patients, consent verified at erasure: {result.erased_uses} (their "
                               "pseudonyms were redacted from the usage logs; the nodes checked them on chain)")
    return result


def _redactions(entry: Mapping, where: str, result: AuditResult) -> None:
    """Count the entry's erased patients in `erased_uses`; a redaction checked at another block than the entry's
    is a violation."""
    redacted = entry.get("redacted") or []
    for redaction in redacted:
        if redaction.get("block") != entry["block"]:
            result.violations += 1
            result.findings.append(f"{where}: an erased patient's consent was verified at block "
                                   f"{redaction.get('block')}, the entry used block {entry['block']}")
    result.erased_uses += len(redacted)


def _list_unanchored(account: str, name: str, entry: Mapping, status: str, result: AuditResult) -> None:
    where = f"round {entry['round']} {name} {entry['phase']}"
    result.unanchored.append({"hospital": name, "account": account, "round": entry["round"], "phase": entry["phase"],
                              "block": entry["block"], "status": status,
                              "patients": len(entry["pseudonyms"]) + len(entry.get("redacted") or [])})
    if status == "voided":
        result.findings.append(f"{where}: read at block {entry['block']}, then voided (the node refused after "
                               "reading: nothing trained or released); its patients are still checked for consent")
        return
    result.unanchored_phases += 1
    why = ("read and never completed (the node stopped while using the data)" if status == "intent"
           else "the node's reply never reached the coordinator, or the round was never anchored")
    result.findings.append(f"{where}: logged but not anchored ({why}); its patients are still checked for consent")


def _check_consent(ledger: Ledger, study_id: bytes, name: str, round_number: int, block: int,
                   pseudonyms: list[Pseudonym], result: AuditResult) -> None:
    """Each pseudonym read held consent at `block`, as the chain answers; a violation for each that did not."""
    try:
        consented = ledger.consents(study_id, pseudonyms, block=block)
    except StateUnavailable as exc:
        result.unverified += len(pseudonyms)
        result.findings.append(f"round {round_number} {name}: consent of {len(pseudonyms)} patients at block {block} "
                               f"cannot be checked on this chain node: {exc}")
        return
    result.checked += len(pseudonyms)
    for pseudonym, held in zip(pseudonyms, consented):
        if not held:
            result.violations += 1
            result.findings.append(
                f"round {round_number} {name}: {pseudonym.short(10)} used without consent at block {block}"
            )


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
        try:  # the hospital the signing key acted for at the pinned block (a hospital may rotate its key)
            acting = ledger.hospital_of(signer, block=anchor.pinned_block)
        except StateUnavailable:
            acting = signer  # no state there: a hospital's registration address is its first key
        if acting != claimed:
            violation(f"the reply stored for {claimed} ({reply.phase}) is not signed by it (the signature recovers "
                      f"to {signer}); at block {anchor.pinned_block} that key acted for {acting or 'no hospital'}")
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
