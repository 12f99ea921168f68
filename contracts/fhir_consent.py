"""A patient's consent as an HL7 FHIR R4 Consent resource (fhir.resources, R4B models), and back.

The resource names the patient by pseudonym only (system urn:twinledger:pseudonym) and the study by its
id (urn:twinledger:study); the purpose is an HL7 v3 PurposeOfUse code. Export reads the chain at a block;
import turns a resource into the terms of a grant for the patient to sign.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from fhir.resources.R4B.consent import Consent
from pydantic import ValidationError

from contracts.ledger import Ledger
from federation.ids import Pseudonym, StudyId, hex0x

PSEUDONYM_SYSTEM = "urn:twinledger:pseudonym"
STUDY_SYSTEM = "urn:twinledger:study"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
CATEGORY_SYSTEM = "http://loinc.org"
RESEARCH_CONSENT_LOINC = "57016-8"  # Privacy policy acknowledgment Document


class ConsentResourceError(ValueError):
    """A FHIR Consent resource that cannot be read as a TwinLedger consent."""


@dataclass(frozen=True)
class ConsentTerms:
    pseudonym: Pseudonym
    study_id: StudyId
    purpose: str
    granted: bool
    valid_from: int
    valid_until: int


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()


def export_consent(ledger: Ledger, pseudonym: bytes, study_id: bytes, *, block: int | str = "latest") -> dict:
    """The patient's consent for a study as a FHIR R4 Consent resource (a JSON-ready dict)."""
    terms = ledger.study(study_id, block=block)
    valid_from, valid_until = ledger.consent_window(pseudonym, study_id, block=block)
    active = ledger.has_consent(pseudonym, study_id, block=block)
    block_number = ledger.block_number() if block == "latest" else int(block)
    timestamp = ledger.w3.eth.get_block(block_number)["timestamp"]
    provision = {
        "type": "permit" if valid_until else "deny",
        "purpose": [{"system": PURPOSE_SYSTEM, "code": terms.purpose}],
    }
    if valid_until:
        provision["period"] = {"start": _iso(valid_from), "end": _iso(valid_until)}
    resource = Consent(
        status="active" if active else "inactive",
        scope={"coding": [{"system": SCOPE_SYSTEM, "code": "research"}]},
        category=[{"coding": [{"system": CATEGORY_SYSTEM, "code": RESEARCH_CONSENT_LOINC}]}],
        patient={"identifier": {"system": PSEUDONYM_SYSTEM, "value": hex0x(pseudonym)}},
        dateTime=_iso(timestamp),
        identifier=[{"system": STUDY_SYSTEM, "value": hex0x(study_id)}],
        policyRule={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        provision=provision,
    )
    return resource.model_dump(mode="json", exclude_none=True)


def _parse(kind, value: str | None, what: str):
    try:
        return kind.parse(value or "")
    except ValueError:
        raise ConsentResourceError(f"{what} must be a 32-byte hex value, got {value!r}") from None


def import_consent(resource: dict) -> ConsentTerms:
    """Read a FHIR R4 Consent resource into consent terms; raises ConsentResourceError saying what is wrong."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Consent":
        raise ConsentResourceError("not a FHIR Consent resource (resourceType must be 'Consent')")
    try:
        consent = Consent.model_validate(resource)
    except ValidationError as exc:
        raise ConsentResourceError(f"invalid FHIR R4 Consent: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}") from None
    identifier = consent.patient.identifier if consent.patient else None
    if identifier is None or identifier.system != PSEUDONYM_SYSTEM:
        raise ConsentResourceError(f"the patient must be identified by a pseudonym ({PSEUDONYM_SYSTEM})")
    pseudonym = _parse(Pseudonym, identifier.value, "the patient's pseudonym")
    studies = [i for i in consent.identifier or [] if i.system == STUDY_SYSTEM]
    if len(studies) != 1:
        raise ConsentResourceError(f"exactly one identifier with system {STUDY_SYSTEM} must name the study")
    study_id = _parse(StudyId, studies[0].value, "the study id")
    provision = consent.provision
    if provision is None or provision.type not in ("permit", "deny"):
        raise ConsentResourceError("provision.type must be 'permit' or 'deny'")
    purposes = [c.code for c in provision.purpose or [] if c.system == PURPOSE_SYSTEM]
    if len(purposes) != 1:
        raise ConsentResourceError(f"provision.purpose must hold one code from {PURPOSE_SYSTEM}")
    granted = provision.type == "permit" and consent.status == "active"
    valid_from = valid_until = 0
    if granted:
        period = provision.period
        if period is None or period.end is None:
            raise ConsentResourceError("a permit needs provision.period with an end: consent is time-limited")
        valid_from = int(period.start.timestamp()) if period.start else 0
        valid_until = int(period.end.timestamp())
        if valid_until <= valid_from:
            raise ConsentResourceError("provision.period ends before it starts")
    return ConsentTerms(pseudonym, study_id, purposes[0], granted, valid_from, valid_until)
