"""The published JSON Schema (draft 2020-12) of ``results.json`` and a validator for it.

Guarantee: ``validate(data)`` accepts exactly what ``AuditResult.to_json()`` writes for schema
version 1.x (metrics as numbers or the "NaN"/"Infinity"/"-Infinity" tokens, figures as objects
whose ``type`` is one of the renderable kinds with that kind's required fields, ERROR stages
with their error text) and rejects anything else with every problem listed by its JSON path.
The schema file is ``robaudit/reports/results.schema.json`` (shipped as package data).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parent / "results.schema.json"


class ResultsSchemaError(ValueError):
    """``results.json`` data does not match the schema; ``problems`` lists ``path: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(
            f"results.json does not match the robaudit results schema ({len(problems)} problem(s)):\n  "
            f"{shown}{more}\nRe-create it with `robaudit audit` or fix the fields named above."
        )


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The results.json JSON Schema as a dict."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _path(parts: Any) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def problems(data: Any) -> list[str]:
    """Every schema violation of ``data`` as ``"$.stages[2].status: ..."``, sorted by path."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(load_schema())
    found = []
    for err in validator.iter_errors(data):
        msg = err.message if len(err.message) <= 200 else f"{err.message[:160]}..."
        found.append(f"{_path(err.absolute_path)}: {msg}")
    return sorted(set(found))


def validate(data: Any) -> None:
    """Check parsed ``results.json`` data against the schema.

    Args:
        data: the parsed JSON (e.g. ``AuditResult.to_json()`` or ``json.load(f)``).

    Raises:
        ResultsSchemaError: listing every violation with its JSON path.
    """
    found = problems(data)
    if found:
        raise ResultsSchemaError(found)
