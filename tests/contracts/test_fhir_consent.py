"""The Consent export and import (contracts/fhir_consent.py) as FHIR expects them: one identifier per consent,
the consent's own time, a patient reference, never-granted and revoked told apart, and HL7's own R4 Consent
example (date-only periods) read without a crash."""

from __future__ import annotations

import copy
import json
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from eth_account import Account

from contracts import ledger as lg
from contracts.fhir_consent import (PSEUDONYM_SYSTEM, STUDY_POLICY_PREFIX, ConsentResourceError, export_consent,
                                    import_consent, read_consent)
from federation.ids import Pseudonym, hex0x

FAR = int(time.time()) + 365 * 24 * 3600
HL7_CONSENT = Path(__file__).resolve().parents[1] / "data" / "fhir" / "hl7" / "consent-example-basic.json"


def _enrolled(chain, n):
    keys = ["0x" + secrets.token_hex(32) for _ in range(n)]
    pseudonyms = [Pseudonym.new() for _ in range(n)]
    chain.hospital.enrol(pseudonyms, [Account.from_key(k).address for k in keys])
    return pseudonyms, keys


def _grant(chain, pseudonym, key, nonce=0):
    return chain.hospital.relay_grants([lg.sign_grant(key, chain.deployment, pseudonym=pseudonym, study_id=chain.study_id,
                                                      valid_from=0, valid_until=FAR, nonce=nonce, deadline=FAR)])


def test_each_consent_has_its_own_identifier_time_and_patient_reference(chain):
    pseudonyms, keys = _enrolled(chain, 2)
    for pseudonym, key in zip(pseudonyms, keys):
        _grant(chain, pseudonym, key)
    granted_at = chain.hospital.block_timestamp(chain.hospital.block_number())
    first, second = (export_consent(chain.hospital, p, chain.study_id) for p in pseudonyms)
    assert len(first["identifier"]) == 1 and first["identifier"] != second["identifier"]
    assert first["identifier"] == export_consent(chain.hospital, pseudonyms[0], chain.study_id)["identifier"]  # stable
    assert first["patient"]["reference"] == f"Patient/{pseudonyms[0].hex()}"
    assert first["patient"]["identifier"] == {"system": PSEUDONYM_SYSTEM, "value": hex0x(pseudonyms[0])}
    assert first["policy"] == [{"uri": STUDY_POLICY_PREFIX + hex0x(chain.study_id)}]
    # The consent's own time (its grant's block), not the download time: the same later.
    assert datetime.fromisoformat(first["dateTime"]).timestamp() <= granted_at
    terms = import_consent(first)
    assert terms.pseudonym == pseudonyms[0] and terms.study_id == chain.study_id and terms.valid_until == FAR


def test_never_granted_and_revoked_consents_export_differently(chain):
    pseudonyms, keys = _enrolled(chain, 2)
    _grant(chain, pseudonyms[1], keys[1])
    chain.hospital.relay_revoke(lg.sign_revoke(keys[1], chain.deployment, pseudonym=pseudonyms[1],
                                               study_id=chain.study_id, nonce=1, deadline=FAR))
    never, revoked = (export_consent(chain.hospital, p, chain.study_id) for p in pseudonyms)
    assert never["status"] == "proposed" and "dateTime" not in never
    assert revoked["status"] == "inactive" and "dateTime" in revoked
    assert never["provision"]["type"] == revoked["provision"]["type"] == "deny"
    assert not import_consent(revoked).granted and not import_consent(never).granted


def test_hl7s_own_consent_example_with_date_only_periods_is_read():
    resource = json.loads(HL7_CONSENT.read_text())
    summary = read_consent(resource)
    day = 24 * 3600
    assert summary.valid_from == int(datetime(2015, 10, 10, tzinfo=timezone.utc).timestamp())
    assert summary.valid_until == int(datetime(2016, 10, 10, tzinfo=timezone.utc).timestamp()) + day  # whole last day
    assert summary.date_time == int(datetime(2016, 5, 11, tzinfo=timezone.utc).timestamp())
    assert summary.patient_reference == "Patient/f001" and summary.status == "active"
    # As a TwinLedger consent it is refused with the reason (it names no pseudonym), never a crash.
    with pytest.raises(ConsentResourceError, match="identified by a pseudonym.*Patient/f001"):
        import_consent(resource)


def test_a_date_only_research_consent_imports_as_terms():
    resource = copy.deepcopy(json.loads(HL7_CONSENT.read_text()))
    pseudonym, study = Pseudonym.new(), "0x" + "ab" * 32
    resource["patient"] = {"reference": f"Patient/{pseudonym.hex()}",
                           "identifier": {"system": PSEUDONYM_SYSTEM, "value": hex0x(pseudonym)}}
    resource["policy"] = [{"uri": STUDY_POLICY_PREFIX + study}]
    resource["provision"].update(type="permit", purpose=[{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                                          "code": "HRESCH"}])
    terms = import_consent(resource)
    assert terms.granted and terms.purpose == "HRESCH" and terms.pseudonym == pseudonym
    assert (terms.valid_from, terms.valid_until) == (1444435200, 1476144000)


def test_malformed_consents_say_what_is_wrong():
    with pytest.raises(ConsentResourceError, match="resourceType"):
        import_consent({"resourceType": "Patient"})
    with pytest.raises(ConsentResourceError, match="invalid FHIR R4 Consent"):
        import_consent({"resourceType": "Consent", "status": "active", "dateTime": "yesterday"})
