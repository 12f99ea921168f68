"""How hard the fuzz tests fuzz: as each names (`make test`, the whole suite), or, in the inner loop
(`pytest -m "not e2e and not browser and not slow"`), a few examples per operation and without schemathesis'
coverage phase (every boundary and invalid combination the schema allows), so every operation is still fuzzed."""

# Set by tests/conftest.py when the run deselects the slow tests (the inner loop).
QUICK = False
QUICK_EXAMPLES = 3


def examples(full: int) -> int:
    return min(full, QUICK_EXAMPLES) if QUICK else full


def budget(schema):
    """The schemathesis schema, its coverage phase left to the whole suite in the inner loop."""
    if QUICK:
        schema.config.phases.coverage.enabled = False
    return schema
