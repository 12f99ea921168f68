"""Each stored value's provenance, kept with the record (node/store.py PatientSource) and sealed like it.

A heart-disease field's provenance is the Observation it was read from: `{"resource": id, "system": code system,
"code": code, "time": effective time, "not_used": other measurements of it, "source": file}` (a CSV value's:
`{"line": n, "source": file}`; sex: the Patient resource, code `Patient.gender`; an age derived from the birth
date: code `Patient.birthDate` at the index date). A twins series' is `{"values": n, "first": time, "last": time, "from": [[time,
"entry 7 (Observation abc)" or "line 12"], ...], "source": file}`. Which tests a patient had, and when, is a
clinical fact: the JSON is sealed by node/vault.py, bound to the patient's pseudonym and to this purpose (a
provenance blob cannot be passed off as a record, or moved to another patient).
"""

from __future__ import annotations

from node.vault import Vault

PURPOSE = "provenance"
LOCAL_RECORD_SYSTEM = "urn:twinledger:local-record-number"  # a record number given without a system
LOCAL_PERSON_SYSTEM = "urn:twinledger:local-person-id"  # a CSV's person_id column


def person_key(system: str, value: str) -> str:
    """How node/store.py Patient.person names a person: records with the same key are one unit of privacy."""
    return f"{system}|{value}"


def _associated(pseudonym: str) -> str:
    return f"{pseudonym}/{PURPOSE}"


def seal(vault: Vault, provenance: dict, *, pseudonym: str) -> bytes:
    return vault.seal(provenance, associated=_associated(pseudonym))


def open_sealed(vault: Vault, sealed: bytes | None, *, pseudonym: str) -> dict:
    """The provenance of a record ({} when none was stored); VaultError if the key is wrong or it was altered."""
    return {} if sealed is None else vault.open_record(sealed, associated=_associated(pseudonym))


def merge(stored: dict, new: dict, clinical: dict, *, source: str) -> dict:
    """Stored provenance with the new file's for every field it gave a value (the rule of node/records/writer.py:
    a value the new file lacks keeps the stored one, and so does its provenance)."""
    merged = dict(stored)
    for name, entry in new.items():
        if clinical.get(name) is not None:
            merged[name] = {**entry, "source": source}
    return merged


def series(events, *, source: str) -> dict[str, dict]:
    """A twins record's provenance from its events (node/twins/records.py Event): per series, every value's time
    and where it was read."""
    found: dict[str, dict] = {}
    for event in sorted(events, key=lambda e: e.time):
        moment = event.time.isoformat()
        entry = found.setdefault(event.field, {"values": 0, "first": moment, "last": moment, "from": [],
                                               "source": source})
        entry["values"] += 1
        entry["last"] = moment
        entry["from"].append([moment, event.where])
    return found
