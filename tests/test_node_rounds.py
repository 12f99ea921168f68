"""Moved: the node's round tests are in tests/node/ (test_consent_gate.py, test_privacy_budget.py,
test_client_app.py) and tests/contracts/test_audit.py; the shared hospital in tests/node/hospital.py.

This re-export keeps `from tests.test_node_rounds import FAR, Hospital, fresh_state`
(tests/test_training_variants.py) working until that import is switched to tests.node.hospital; then
delete this file."""

from tests.node.hospital import FAR, Hospital, fresh_state  # noqa: F401
