"""Bulk consent import (`twinledger node consent import`): consents patients signed on paper or in another system,
as EIP-712 signatures in a JSON-lines file, checked here and relayed through the portal's outbox.

Each line is one signed change (docs/node.md, "Bulk consent import"). The whole file is parsed first: a malformed
line stops the import before anything is sent, naming the line. Then every signature is checked against the
consent key this node enrolled the patient with, in this deployment's consent domain, and its deadline against
the chain's clock: a line that fails is reported and the rest go on. What passes goes into the portal's outbox
(the `consentrelay` table, marked as no portal account's) and is sent by node.portal.relays.Relayer, the code the
portal's worker runs: grants in batches, a refused batch one by one, a change already recorded recognised.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_typed_data

from contracts.ledger import Ledger
from contracts.ledger.consent import GRANT_BATCH
from contracts.ledger.signing import GRANT_TYPES, REVOKE_TYPES, consent_domain
from federation.ids import Pseudonym, StudyId, from_hex0x
from node.bulk import BulkFileError, Progress
from node.records.fhir_input import MAX_JSON_DEPTH, FhirFileError, check_depth
from node.settings import NodeSettings
from node.store import Store

BULK_ACCOUNT = 0  # the outbox's account_id of imported changes: no portal account (portal ids start at 1)
REPORT_FIELDS = ("line", "patient", "study", "action", "outcome", "reason", "block", "tx_hash")


@dataclass
class SignedLine:
    line: int
    patient: str  # as the file names the patient: record number or pseudonym
    study: str
    action: str  # "grant" or "revoke"
    nonce: int
    deadline: int
    signature: str
    valid_from: int | None = None
    valid_until: int | None = None
    pseudonym: str | None = None  # 0x-hex, once the patient is found


@dataclass
class LineOutcome:
    line: int
    patient: str
    study: str
    action: str
    outcome: str  # "recorded", "rejected" (not sent), "failed" (the chain refused), "waiting" (in the outbox)
    reason: str = ""
    block: int | None = None
    tx_hash: str | None = None


def read_signed_consents(path: Path) -> list[SignedLine]:
    """Every line of the file; BulkFileError naming the first malformed line."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BulkFileError(f"{path}: cannot read it ({exc})") from exc
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.strip() and not raw.lstrip().startswith("#"):
            lines.append(_parse(path, number, raw))
    if not lines:
        raise BulkFileError(f"{path}: no signed consents in it")
    return lines


def _parse(path: Path, number: int, raw: str) -> SignedLine:
    def bad(why: str) -> BulkFileError:
        return BulkFileError(f"{path} line {number}: {why}")

    try:
        check_depth(raw, source=f"{path} line {number}")  # the record importer's guard: before any parser recurses
        item = json.loads(raw)
    except FhirFileError:
        raise bad(f"nested more than {MAX_JSON_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        raise bad(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(item, dict):
        raise bad("expected a JSON object")
    patient = item.get("record_number") or item.get("pseudonym")
    if not isinstance(patient, str) or not patient or ("record_number" in item) == ("pseudonym" in item):
        raise bad("give the patient as exactly one of record_number or pseudonym")
    action = item.get("action")
    if action not in ("grant", "revoke"):
        raise bad(f"action must be grant or revoke, not {action!r}")
    needed = ("nonce", "deadline") + (("valid_from", "valid_until") if action == "grant" else ())
    for name in needed:
        if not isinstance(item.get(name), int) or isinstance(item.get(name), bool) or not 0 <= item[name] < 2**64:
            raise bad(f"{name} must be a whole number of seconds (or the nonce) from 0 to 2^64-1")
    try:
        study = str(StudyId.parse(item.get("study", "")))
        if "pseudonym" in item:
            patient = str(Pseudonym.parse(patient))
        if len(from_hex0x(item.get("signature", ""))) != 65:
            raise ValueError("the signature must be 65 bytes")
    except (ValueError, TypeError, AttributeError) as exc:
        raise bad(f"{exc}") from None
    return SignedLine(number, patient, study, action, item["nonce"], item["deadline"], item["signature"],
                      item.get("valid_from"), item.get("valid_until"), patient if "pseudonym" in item else None)


def check(lines: list[SignedLine], settings: NodeSettings, ledger: Ledger) -> tuple[list[SignedLine], list[LineOutcome]]:
    """The lines whose signature is the enrolled patient's, in this deployment's domain, and not expired; and a
    "rejected" outcome for every other line."""
    patients = Store(settings.resolved_database_url).patients()
    by_number = {p.record_number: p for p in patients}
    by_pseudonym = {p.pseudonym.lower(): p for p in patients}
    chain_now = ledger.block_timestamp()
    domain = consent_domain(ledger.deployment)
    good, rejected = [], []
    for line in lines:
        patient = by_pseudonym.get(line.patient.lower()) if line.pseudonym else by_number.get(line.patient)
        reason = None
        if patient is None:
            reason = "unknown patient: no imported record of this node"
        elif patient.consent_key is None:
            reason = "the patient is not enrolled on chain (twinledger node enrol)"
        elif line.deadline < chain_now:
            reason = f"expired: the signature's deadline {line.deadline} is before the chain's time {chain_now}"
        elif (_signer(line, patient.pseudonym, domain) or "").lower() != patient.consent_key.lower():
            reason = ("the signature is not the patient's: signed with another key, for another change, or for "
                      "another consent registry (chain, address or salt)")
        if reason:
            rejected.append(_outcome(line, "rejected", reason))
        else:
            line.pseudonym = patient.pseudonym
            good.append(line)
    return good, rejected


def _signer(line: SignedLine, pseudonym: str, domain: dict) -> str | None:
    message = {"pseudonym": from_hex0x(pseudonym), "studyId": from_hex0x(line.study), "nonce": line.nonce,
               "deadline": line.deadline}
    if line.action == "grant":
        message |= {"validFrom": line.valid_from, "validUntil": line.valid_until}
    types = GRANT_TYPES if line.action == "grant" else REVOKE_TYPES
    try:
        return Account.recover_message(encode_typed_data(domain, types, message), signature=from_hex0x(line.signature))
    except Exception:  # noqa: BLE001 - eth-account raises several types for a signature that recovers nobody
        return None


def relay(lines: list[SignedLine], settings: NodeSettings, ledger: Ledger, *, batch: int = GRANT_BATCH,
          progress: Progress | None = None) -> list[LineOutcome]:
    """Put the checked lines in the portal's outbox and send them with its relayer, batch by batch. A chain that
    stops answering leaves the rest in the outbox ("waiting"): the portal sends them when it runs."""
    from node.portal.models import ConsentRelay
    from node.portal.relays import Relayer

    store = Store(settings.resolved_database_url)
    rows = {}
    with store.session() as session:
        for line in lines:
            row = ConsentRelay(account_id=BULK_ACCOUNT, study_id=line.study.lower(), action=line.action,
                               pseudonym=line.pseudonym.lower(), nonce=line.nonce, deadline=line.deadline,
                               valid_from=line.valid_from, valid_until=line.valid_until,
                               signature=line.signature.lower())
            session.add(row)
            rows[line.line] = row
        session.commit()
    ids = {line.line: rows[line.line].id for line in lines}
    relayer = Relayer(store, lambda: ledger, threading.Lock(), batch=batch)
    progress = progress or Progress("relaying consents", len(lines))
    stopped = ""
    while True:
        try:
            busy = relayer.relay_waiting()
        except Exception as exc:  # noqa: BLE001 - the relayer's "no chain": what is left stays in the outbox
            stopped = f"still in the outbox, sent when the portal runs ({exc})"
            break
        settled = _settled(store, ids.values())
        progress.advance(len(settled) - progress.done)
        if not busy or len(settled) == len(ids):
            break
    progress.close()
    outcomes = []
    with store.session() as session:
        for line in lines:
            row = session.get(ConsentRelay, ids[line.line])
            if row.status == "recorded":
                outcomes.append(_outcome(line, "recorded", block=row.block, tx_hash=row.tx_hash))
            elif row.status == "failed":
                outcomes.append(_outcome(line, "failed", row.reason or ""))
            else:
                outcomes.append(_outcome(line, "waiting", stopped or "still in the outbox"))
    return outcomes


def _settled(store: Store, ids) -> list[int]:
    from sqlmodel import select

    from node.portal.models import ConsentRelay

    with store.session() as session:
        return list(session.exec(select(ConsentRelay.id).where(ConsentRelay.id.in_(list(ids)),
                                                               ConsentRelay.status != "sent")))


def _outcome(line: SignedLine, outcome: str, reason: str = "", **fields) -> LineOutcome:
    return LineOutcome(line.line, line.patient, line.study, line.action, outcome, reason, **fields)


def import_consents(path: Path, settings: NodeSettings, ledger: Ledger, *, batch: int = GRANT_BATCH,
                    progress: Progress | None = None) -> list[LineOutcome]:
    """Read, check and relay a file of signed consents; one outcome per line, in file order."""
    lines = read_signed_consents(path)
    good, rejected = check(lines, settings, ledger)
    outcomes = rejected + (relay(good, settings, ledger, batch=batch, progress=progress) if good else [])
    return sorted(outcomes, key=lambda o: o.line)
