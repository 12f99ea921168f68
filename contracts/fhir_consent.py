"""A patient's consent as an HL7 FHIR R4 Consent resource (fhir.resources, R4B models), and back.

Export (`export_consent`) reads the chain at a block and writes what FHIR expects of a Consent:
- one `identifier` per consent: `urn:uuid:` of a name-based UUID (RFC 4122 v5) of the pseudonym and the study, so
  every patient's consent to every study has its own, stable identifier (the study is named in `policy`);
- `dateTime`: the consent's own time, the block time of the patient's last grant or revocation for the study
  (absent when the patient never answered), not the time of the download;
- `patient`: a reference (`Patient/<pseudonym digits>`) and the pseudonym as its identifier
  (system urn:twinledger:pseudonym); nothing else about the patient;
- `status`: `active` while the consent holds, `inactive` once revoked or expired, `proposed` when the patient
  never granted it (FHIR: "the consent is in the process of being established");
- `policy[0].uri`: `urn:twinledger:study:<study id>`; `provision.purpose`: the study's HL7 v3 PurposeOfUse code;
  `provision.type` permit with the granted window as `provision.period`, or deny.

Import (`read_consent`) takes any R4 Consent, HL7's own examples included (date-only `dateTime` and periods: a
start date means 00:00 UTC that day, an end date the end of that day); `import_consent` turns one into the
terms of a grant for the patient to sign, refusing with a reason what TwinLedger cannot take.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from fhir.resources.R4B.consent import Consent
from pydantic import ValidationError

from contracts.ledger import Ledger
from federation.ids import Pseudonym, StudyId, hex0x

PSEUDONYM_SYSTEM = "urn:twinledger:pseudonym"
STUDY_SYSTEM = "urn:twinledger:study"  # legacy: the study id as an identifier (read, no longer written)
STUDY_POLICY_PREFIX = "urn:twinledger:study:"
CONSENT_ID_SYSTEM = "urn:ietf:rfc:3986"
CONSENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:twinledger:consent")  # the namespace of consent ids
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


@dataclass(frozen=True)
class ConsentSummary:
    """What any R4 Consent says, read without TwinLedger's conventions (HL7's examples read this way)."""

    identifiers: list[tuple[str | None, str | None]]
    status: str
    date_time: int | None  # unix seconds
    patient_reference: str | None
    patient_identifier: tuple[str | None, str | None] | None
    provision_type: str | None
    valid_from: int | None
    valid_until: int | None
    purposes: list[tuple[str | None, str | None]]
    policies: list[str]


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()


def consent_identifier(pseudonym: bytes, study_id: bytes) -> str:
    """The one identifier of a patient's consent to a study: stable, distinct per (patient, study)."""
    return f"urn:uuid:{uuid.uuid5(CONSENT_NAMESPACE, hex0x(pseudonym) + hex0x(study_id))}"


def export_consent(ledger: Ledger, pseudonym: bytes, study_id: bytes, *, block: int | str = "latest") -> dict:
    """The patient's consent for a study as a FHIR R4 Consent resource (a JSON-ready dict)."""
    terms = ledger.study(study_id, block=block)
    block_number = ledger.block_number() if block == "latest" else int(block)
    valid_from, valid_until = ledger.consent_window(pseudonym, study_id, block=block_number)
    active = ledger.has_consent(pseudonym, study_id, block=block_number)
    changes = [c for c in ledger.consent_changes(study_id, to_block=block_number) if bytes(c.pseudonym) == bytes(pseudonym)]
    last = changes[-1] if changes else None
    status = "active" if active else ("proposed" if last is None else "inactive")
    provision = {"type": "permit" if valid_until else "deny",
                 "purpose": [{"system": PURPOSE_SYSTEM, "code": terms.purpose}]}
    if valid_until:
        provision["period"] = {"start": _iso(valid_from), "end": _iso(valid_until)}
    fields = dict(
        status=status,
        scope={"coding": [{"system": SCOPE_SYSTEM, "code": "research"}]},
        category=[{"coding": [{"system": CATEGORY_SYSTEM, "code": RESEARCH_CONSENT_LOINC}]}],
        patient={"reference": f"Patient/{bytes(pseudonym).hex()}",
                 "identifier": {"system": PSEUDONYM_SYSTEM, "value": hex0x(pseudonym)}},
        identifier=[{"system": CONSENT_ID_SYSTEM, "value": consent_identifier(pseudonym, study_id)}],
        policy=[{"uri": STUDY_POLICY_PREFIX + hex0x(study_id)}],
        policyRule={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        provision=provision,
    )
    if last is not None:
        fields["dateTime"] = _iso(ledger.block_timestamp(last.block))
    return Consent(**fields).model_dump(mode="json", exclude_none=True)


def _seconds(moment, *, end: bool = False) -> int | None:
    """Unix seconds of a FHIR date or dateTime: a date starts at 00:00 UTC, or (end=True) ends at the next 00:00."""
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return int((moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp())
    if isinstance(moment, date):
        start = datetime(moment.year, moment.month, moment.day, tzinfo=timezone.utc)
        return int((start + timedelta(days=1) if end else start).timestamp())
    raise ConsentResourceError(f"unreadable date {moment!r}")


def _validate(resource: dict) -> Consent:
    if not isinstance(resource, dict) or resource.get("resourceType") != "Consent":
        raise ConsentResourceError("not a FHIR Consent resource (resourceType must be 'Consent')")
    try:
        return Consent.model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConsentResourceError(f"invalid FHIR R4 Consent: {first['msg']} at {first['loc']}") from None


def read_consent(resource: dict) -> ConsentSummary:
    """Any FHIR R4 Consent (a dict) as a ConsentSummary; ConsentResourceError if it is not valid R4."""
    consent = _validate(resource)
    patient = consent.patient
    identifier = patient.identifier if patient else None
    provision = consent.provision
    period = provision.period if provision else None
    return ConsentSummary(
        identifiers=[(i.system, i.value) for i in consent.identifier or []],
        status=consent.status,
        date_time=_seconds(consent.dateTime),
        patient_reference=patient.reference if patient else None,
        patient_identifier=(identifier.system, identifier.value) if identifier else None,
        provision_type=provision.type if provision else None,
        valid_from=_seconds(period.start) if period else None,
        valid_until=_seconds(period.end, end=True) if period else None,
        purposes=[(c.system, c.code) for c in (provision.purpose or [] if provision else [])],
        policies=[p.uri for p in consent.policy or [] if p.uri],
    )


def _parse(kind, value: str | None, what: str):
    try:
        return kind.parse(value or "")
    except ValueError:
        raise ConsentResourceError(f"{what} must be a 32-byte hex value, got {value!r}") from None


def import_consent(resource: dict) -> ConsentTerms:
    """Read a FHIR R4 Consent resource into consent terms; raises ConsentResourceError saying what is wrong."""
    summary = read_consent(resource)
    if summary.patient_identifier is None or summary.patient_identifier[0] != PSEUDONYM_SYSTEM:
        raise ConsentResourceError(f"the patient must be identified by a pseudonym ({PSEUDONYM_SYSTEM}); "
                                   f"this Consent names {summary.patient_reference or 'no patient'}")
    pseudonym = _parse(Pseudonym, summary.patient_identifier[1], "the patient's pseudonym")
    studies = [uri.removeprefix(STUDY_POLICY_PREFIX) for uri in summary.policies if uri.startswith(STUDY_POLICY_PREFIX)]
    studies += [value for system, value in summary.identifiers if system == STUDY_SYSTEM]
    if len(set(studies)) != 1:
        raise ConsentResourceError(f"exactly one study must be named (policy.uri {STUDY_POLICY_PREFIX}<study id>)")
    study_id = _parse(StudyId, studies[0], "the study id")
    if summary.provision_type not in ("permit", "deny"):
        raise ConsentResourceError("provision.type must be 'permit' or 'deny'")
    purposes = [code for system, code in summary.purposes if system == PURPOSE_SYSTEM]
    if len(purposes) != 1:
        raise ConsentResourceError(f"provision.purpose must hold one code from {PURPOSE_SYSTEM}")
    granted = summary.provision_type == "permit" and summary.status == "active"
    valid_from = valid_until = 0
    if granted:
        if summary.valid_until is None:
            raise ConsentResourceError("a permit needs provision.period with an end: consent is time-limited")
        valid_from, valid_until = summary.valid_from or 0, summary.valid_until
        if valid_until <= valid_from:
            raise ConsentResourceError("provision.period ends before it starts")
    return ConsentTerms(pseudonym, study_id, purposes[0], granted, valid_from, valid_until)
