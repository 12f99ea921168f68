"""Importing patient records into a node's store: readers by record kind and format, one writer.

- `registry.py`: `import_file(store, vault, path, record_prefix=..., cohort=None)` picks the reader
  (`READERS`, by record kind and format) and stores what it read. Readers and kinds are the tasks'
  (federation/tasks/*/ `readers`, `split_cohorts`), registered for every task in `federation.tasks.TASKS`;
  a file no reader takes is refused naming the known kinds. `register` adds a reader by hand.
- `builtin_readers.py`: the node-side readers the shipped tasks name (they need the FHIR parser or the twins).
- `fhir_input.py`: FHIR R4 as EHRs send it (Bundles of any type, NDJSON, BOM), depth-bounded, parsed once;
  patient identity (MR first, never a national identifier). Mapping table: docs/fhir-mapping.md.
- `heart_csv.py`, `heart_fhir.py` (and `heart_fhir_export.py`): heart-disease records, CSV and FHIR R4.
- `twin_csv.py`, `twin_fhir.py`: type 1 diabetes records for the twins (node/twins/records.py), CSV and FHIR R4.
- `csv_input.py`: what both CSV readers share (numbered non-blank rows, a cell read as a number).
- `kinds.py`: each record kind's cohorts; `writer.py`: pseudonyms, sealing (node/vault.py) and the store.
- `base.py`: `RecordFileError`, `Records` (what a reader read and skipped), `ImportReport` (imported, updated,
  unchanged, rejected per patient with reasons, skipped by kind, provenance).
"""

from node.records.base import ImportReport, PatientOutcome, RecordFileError, Records
from node.records.registry import KINDS, READERS, Reader, import_file, reader_for, register, register_kind

__all__ = ["KINDS", "READERS", "ImportReport", "PatientOutcome", "Reader", "RecordFileError", "Records", "import_file",
           "reader_for", "register", "register_kind"]
