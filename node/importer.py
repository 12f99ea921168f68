"""Kept for callers not yet moved to node/records/ (node/admin.py, deploy/cli.py, deploy/bench_training.py,
node/twins/cli.py, tests/test_node_console.py): the import entry point now lives in the `node.records` package."""

from node.records.base import ImportReport, RecordFileError
from node.records.heart_csv import import_heart_disease_csv, read_heart_disease_csv
from node.records.registry import import_file

__all__ = ["ImportReport", "RecordFileError", "import_file", "import_heart_disease_csv", "read_heart_disease_csv"]
