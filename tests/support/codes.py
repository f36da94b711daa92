"""The problem codes the tests know (SPEC section 3), in one place."""

from __future__ import annotations

# Every code validation can report for a repo on disk; each is produced by at least one case under
# tests/cases/invalid. LEDGER_TAMPERED needs git history (tested end to end in test_reconcile_e2e.py).
VALIDATION_CODES = frozenset({
    "YAML_PARSE", "YAML_TOO_LARGE", "YAML_ENCODING", "YAML_DUPLICATE_KEY", "YAML_ALIAS_BUDGET", "YAML_DEPTH",
    "YAML_TAG", "YAML_MERGE", "SCHEMA", "NAME_INVALID", "NAME_MISMATCH", "NAME_DUPLICATE", "USER_DUPLICATE",
    "DRIVER_UNKNOWN", "PATH_ESCAPE", "CONTENT_MISSING", "CONTENT_TOKEN_UNDECLARED", "TOKEN_DUPLICATE",
    "TOKEN_PATTERN", "TOKEN_VALUE", "SECRET_REQUIRED", "SECRET_PREFIX", "REF_SERVER", "REF_DEFINITION",
    "REF_INVALID", "REF_USER", "TOKEN_UNDECLARED", "TOKEN_UNCONFIGURED", "MODIFIED", "LEDGER_INVALID",
})
# What a driver's own settings check adds (the built-in drivers' url and command checks).
DRIVER_CODES = frozenset({"DRIVER_SETTINGS"})
# What only a ledger with history can show.
HISTORY_CODES = frozenset({"LEDGER_TAMPERED", "LEDGER_EDIT"})
