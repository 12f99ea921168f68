"""FHIR R4 as EHRs send it, read once: a Bundle of any type, a single resource, or an NDJSON bulk export
(`$export`, one resource per line); the readers (heart_fhir.py, twin_fhir.py) read the resources this yields.

- The text is UTF-8 (a byte-order mark is dropped) and its JSON nesting depth is bounded BEFORE parsing
  (`MAX_JSON_DEPTH`): a legal-but-absurd Patient with 900 nested extensions, or a 100,000-deep array, is
  refused with a clear error instead of overflowing the C stack (py_ecc, loaded with web3, raises Python's
  recursion limit to 100,000, so json would segfault before raising RecursionError).
- Transaction and batch entries whose request is not a create or update (DELETE, GET, HEAD, PATCH) are skipped
  and counted; so is a search's OperationOutcome (`search.mode` outcome).
- `load(path)` parses a file once: the registry asks whether a file is FHIR and which kind of records it holds,
  and the reader then reads the same parsed document (`forget()` drops it after the import).
- Patient identity (`patient_identity`): the identifier of type MR (HL7 v2-0203) first, then another
  identifier that is not a national one (social security, driver's licence, passport, national health or
  insurance numbers are never a record number), else the resource id; two Patients whose identifiers share a
  value under different systems are different patients.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from node.records.base import RecordFileError

MAX_JSON_DEPTH = 64  # FHIR resources nest about 10 deep; Bundles add 3
MAX_RECORD_NUMBER = 64
V2_IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
# HL7 v2-0203 identifier types that are national or personal documents, never a hospital's record number.
NATIONAL_TYPES = {"SS", "SB", "NI", "NIIP", "NH", "NNxxx", "DL", "PPN", "CZ", "HC", "JHN", "PEN", "TAX", "BCT",
                  "BC", "MA", "MC", "MB", "SN", "WC", "AM", "DS", "VS", "CY"}
NATIONAL_SYSTEMS = ("http://hl7.org/fhir/sid/us-ssn", "http://hl7.org/fhir/sid/us-mbi", "http://hl7.org/fhir/sid/us-npi",
                    "urn:oid:2.16.840.1.113883.4.1", "urn:oid:2.16.840.1.113883.4.3.", "urn:oid:2.16.840.1.113883.4.330.",
                    "urn:oid:2.16.528.1.1007.3.1", "http://fhir.nl/fhir/NamingSystem/bsn",
                    "https://fhir.nhs.uk/Id/nhs-number", "http://standardhealthrecord.org/fhir/StructureDefinition/passportNumber")
SKIPPED_METHODS = {"DELETE", "GET", "HEAD", "PATCH"}
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class FhirFileError(RecordFileError):
    """The file is not FHIR the node can read (not UTF-8, not JSON, nested too deeply, not a resource)."""


def check_depth(text: str, *, source: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than `limit` before any parser recurses into it (strings are skipped)."""
    depth = 0
    for token in _TOKENS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > limit:
                line = text.count("\n", 0, token.start()) + 1
                raise FhirFileError(f"{source}: the JSON is nested more than {limit} levels deep (line {line}); "
                                    "no FHIR resource the node reads nests that deep")
        elif char in "]}":
            depth -= 1


def loads(text: str | bytes, *, source: str, limit: int = MAX_JSON_DEPTH):
    """Parse one JSON document of untrusted text with its depth bounded first: FhirFileError otherwise."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise FhirFileError(f"{source}: not UTF-8 text") from None
    check_depth(text, source=source, limit=limit)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FhirFileError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None


@dataclass(frozen=True)
class Entry:
    label: str  # "entry 3 (Observation abc)" or "line 3 (Observation abc)", for messages
    resource: dict
    full_url: str | None = None


@dataclass
class FhirDocument:
    """The resources of one file, in file order, with what was skipped before any reader looked."""

    source: str
    format: str  # "bundle", "ndjson" or "resource"
    entries: list[Entry]
    skipped: Counter = field(default_factory=Counter)  # "DELETE request", "OperationOutcome", ... -> count
    problems: list[str] = field(default_factory=list)  # entries that are not resources at all

    def of_type(self, *types: str) -> list[Entry]:
        return [e for e in self.entries if e.resource.get("resourceType") in types]


def _label(where: str, resource: dict) -> str:
    kind = resource.get("resourceType", "resource")
    ident = resource.get("id")
    return f"{where} ({kind}{' ' + str(ident) if ident else ''})"


def parse(data: bytes | str, *, source: str) -> FhirDocument:
    """A Bundle, a single resource or NDJSON (one resource a line) as a FhirDocument; FhirFileError if none."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise FhirFileError(f"{source}: not UTF-8 text") from None
    text = data.lstrip("\ufeff")
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if len(lines) > 1 and all(line.lstrip().startswith("{") and line.rstrip().endswith("}") for _, line in lines):
        try:
            loads(lines[0][1], source=source)  # depth-bounded: the sniff parses untrusted text too
            is_ndjson = True
        except FhirFileError:
            is_ndjson = False
        if is_ndjson:
            return _ndjson(lines, source)
    document = loads(text, source=source)
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        found = f"a JSON {type(document).__name__}" if not isinstance(document, dict) else "an object without resourceType"
        raise FhirFileError(f"{source}: not a FHIR Bundle, resource or NDJSON (found {found})")
    if document["resourceType"] != "Bundle":
        return FhirDocument(source, "resource", [Entry(_label("the resource", document), document)])
    entries = document.get("entry", [])
    if not isinstance(entries, list):
        raise FhirFileError(f"{source}: Bundle.entry must be a list")
    result = FhirDocument(source, "bundle", [])
    for index, entry in enumerate(entries, start=1):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        request = entry.get("request") if isinstance(entry, dict) else None
        method = str(request.get("method", "")).upper() if isinstance(request, dict) else ""
        if method in SKIPPED_METHODS:
            result.skipped[f"{method} request"] += 1
            continue
        if not isinstance(resource, dict):
            result.problems.append(f"entry {index}: no resource")
            continue
        search = entry.get("search") if isinstance(entry, dict) else None
        if isinstance(search, dict) and search.get("mode") == "outcome":
            result.skipped[str(resource.get("resourceType", "resource"))] += 1
            continue
        full_url = entry.get("fullUrl")
        result.entries.append(Entry(_label(f"entry {index}", resource), resource,
                                    full_url if isinstance(full_url, str) and full_url else None))
    return result


def _ndjson(lines: list[tuple[int, str]], source: str) -> FhirDocument:
    result = FhirDocument(source, "ndjson", [])
    for number, line in lines:
        resource = loads(line, source=f"{source}, line {number}")
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            result.problems.append(f"line {number}: not a FHIR resource")
            continue
        result.entries.append(Entry(_label(f"line {number}", resource), resource))
    return result


_cache: dict[tuple, FhirDocument] = {}


def load(path: Path) -> FhirDocument:
    """Parse a file once (the last file parsed is kept until `forget()` or another file is loaded)."""
    path = Path(path)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        raise FhirFileError(f"{path}: no such file") from None
    if key not in _cache:
        document = parse(path.read_bytes(), source=path.name)
        _cache.clear()
        _cache[key] = document
    return _cache[key]


def forget() -> None:
    _cache.clear()


def sniff(path: Path) -> bool:
    """Whether a file looks like FHIR JSON or NDJSON: a `.json`/`.ndjson` name, or text starting with `{`."""
    path = Path(path)
    if path.suffix.lower() in (".json", ".ndjson"):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(256).decode("utf-8-sig", errors="replace").lstrip()
    except OSError:
        return False
    return head.startswith("{")


def reference_key(reference: str | None) -> str:
    """`Patient/x` for `Patient/x`, `http://server/fhir/Patient/x` or `Patient/x/_history/2`; else as given."""
    if not reference:
        return ""
    parts = reference.split("/")
    if "Patient" in parts[:-1]:
        at = len(parts) - 1 - parts[::-1].index("Patient")
        return f"Patient/{parts[at + 1]}"
    return reference


def references(entry: Entry, ident: str | None) -> list[str]:
    """The references that name a Patient entry: its fullUrl, that URL's `Patient/x`, and `Patient/<id>`."""
    found = [entry.full_url, reference_key(entry.full_url)] if entry.full_url else []
    found += [f"Patient/{ident}"] if ident else []
    return list(dict.fromkeys(r for r in found if r))


# ---- patient identity ----


@dataclass(frozen=True)
class Identity:
    number: str | None  # the record number, or None (see `why`)
    system: str | None  # the identifier system it came from ("" for a resource id)
    why: str = ""  # why there is no record number


def _types(identifier: dict) -> set[str]:
    concept = identifier.get("type") if isinstance(identifier.get("type"), dict) else {}
    return {c.get("code") for c in concept.get("coding") or [] if isinstance(c, dict)
            and c.get("system") in (V2_IDENTIFIER_TYPE, None)}


def is_national(identifier: dict) -> bool:
    system = str(identifier.get("system") or "")
    return bool(_types(identifier) & NATIONAL_TYPES) or any(system.startswith(s) for s in NATIONAL_SYSTEMS)


def patient_identity(patient: dict, *, record_prefix: str) -> Identity:
    """The record number of a Patient resource (dict): MR first, never a national identifier, else its id."""
    identifiers = [i for i in patient.get("identifier") or [] if isinstance(i, dict) and str(i.get("value") or "").strip()]
    usable = [i for i in identifiers if not is_national(i)]
    chosen = [i for i in usable if "MR" in _types(i)]
    if len(chosen) > 1 and len({str(i["value"]).strip() for i in chosen}) > 1:
        return Identity(None, None, "several medical record numbers (identifiers of type MR)")
    if not chosen:
        untyped = [i for i in usable if not _types(i)] or usable
        chosen = untyped if len({(i.get("system"), str(i["value"]).strip()) for i in untyped}) == 1 else []
    if chosen:
        identifier = chosen[0]
        number = str(identifier["value"]).strip()
        if len(number) > MAX_RECORD_NUMBER:
            return Identity(None, None, f"the record number has more than {MAX_RECORD_NUMBER} characters")
        return Identity(number, str(identifier.get("system") or ""))
    ident = patient.get("id")
    if isinstance(ident, str) and ident:
        # Stable on re-export from the same server: the same Patient keeps its number across files.
        return Identity(f"{record_prefix}-{ident}"[:MAX_RECORD_NUMBER], "")
    if identifiers and not usable:
        return Identity(None, None, "only national identifiers (never stored as a record number) and no id")
    return Identity(None, None, "no identifier of type MR, no single other identifier and no id")
