"""The hospital IT console: node health, record imports, enrolment codes, privacy budgets (docs/node-console.md)."""
