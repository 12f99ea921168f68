"""How many examples a fuzz test asks Hypothesis for: the count it names in the whole suite (`make test`), a few
in the inner loop (`pytest -m "not e2e and not browser and not slow"`), which still fuzzes every operation."""

# Set by tests/conftest.py when the run deselects the slow tests (the inner loop).
QUICK = False
QUICK_EXAMPLES = 3


def examples(full: int) -> int:
    return min(full, QUICK_EXAMPLES) if QUICK else full
