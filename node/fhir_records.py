"""Kept for callers not yet moved to node/records/ (tests/test_node_console.py, tests/test_node_console_browser.py):
heart-disease Bundles are read by node/records/heart_fhir.py and written by node/records/heart_fhir_export.py."""

from node.records.heart_fhir import BundleError, import_bundle, import_bundle_file, read_bundle
from node.records.heart_fhir_export import bundle_from_records, export_csv_as_bundle

__all__ = ["BundleError", "bundle_from_records", "export_csv_as_bundle", "import_bundle", "import_bundle_file",
           "read_bundle"]
