"""Kept for node/twins/cli.py until it imports node.records.twin_csv (where the twins' CSV reader now lives)."""

from node.records.twin_csv import TwinFileError, read_twin_csv, write_twin_csv

__all__ = ["TwinFileError", "read_twin_csv", "write_twin_csv"]
