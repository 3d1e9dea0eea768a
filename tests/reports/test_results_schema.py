"""The published JSON Schema of results.json accepts real results and rejects broken ones."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from robaudit.reports.schema import ResultsSchemaError, load_schema, problems, validate

from robaudit.results import AuditResult


@pytest.fixture(scope="module")
def data(audit: AuditResult) -> dict[str, Any]:
    return json.loads(json.dumps(audit.to_json(), allow_nan=False))


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    figure_types = set(schema["$defs"]["figure_type"]["enum"])
    assert figure_types == {"line", "heatmap", "bars", "table", "images", "graph", "attention_inspector"}


def test_fixture_results_validate_including_nan_tokens(data: dict[str, Any]) -> None:
    assert any(v == "NaN" for s in data["stages"] for v in s["metrics"].values())
    assert any(v == "Infinity" for s in data["stages"] for v in s["metrics"].values())
    validate(data)
    assert problems(data) == []
    AuditResult.from_json(data)  # and the reader agrees


def _set(d: dict[str, Any], path: list[Any], value: Any) -> None:
    for p in path[:-1]:
        d = d[p]
    if value is KeyError:
        del d[path[-1]]
    else:
        d[path[-1]] = value


BROKEN: list[tuple[list[Any], Any, str]] = [
    (["verdict"], "MAYBE", "$.verdict"),
    (["verdict"], KeyError, "'verdict' is a required property"),
    (["exit_code"], 7, "$.exit_code"),
    (["surprise"], 1, "Additional properties"),
    (["stages", 0, "status"], "BROKEN", "$.stages[0].status"),
    (["stages", 0, "metrics", "accuracy"], "0.9", "$.stages[0].metrics.accuracy"),
    (["stages", 0, "metrics", "accuracy"], "nan", "$.stages[0].metrics.accuracy"),
    (["stages", 3, "error"], None, "$.stages[3].error"),
    (["stages", 1, "figures", 0, "type"], "pie", "$.stages[1].figures[0].type"),
    (["stages", 1, "figures", 0, "series"], KeyError, "'series' is a required property"),
    (["stages", 1, "figures", 1, "values"], [["x"]], "$.stages[1].figures[1].values[0][0]"),
    (["stages", 1, "figures", 4, "rows", 0, "images", 0, "png"], "https://x.test/a.png",
     "$.stages[1].figures[4].rows[0].images[0].png"),
    (["stages", 10, "figures", 0, "images", 0, "views", 0, "version"], "blurred",
     "$.stages[10].figures[0].images[0].views[0].version"),
    (["gates", 0, "severity"], "maybe", "$.gates[0].severity"),
    (["gates", 0, "op"], "~", "$.gates[0].op"),
    (["gates", 0, "passed"], "yes", "$.gates[0].passed"),
    (["models", 0, "fingerprint"], KeyError, "'fingerprint' is a required property"),
    (["schema_version"], "2.0", "$.schema_version"),
]


@pytest.mark.parametrize(("path", "value", "expect"), BROKEN, ids=[".".join(map(str, b[0])) for b in BROKEN])
def test_broken_results_fail_with_their_path(data: dict[str, Any], path: list[Any], value: Any,
                                             expect: str) -> None:
    broken = copy.deepcopy(data)
    _set(broken, path, value)
    with pytest.raises(ResultsSchemaError) as info:
        validate(broken)
    assert expect in str(info.value), str(info.value)
    assert info.value.problems


def test_error_message_names_the_fix(data: dict[str, Any], make_result: Callable[..., AuditResult]) -> None:
    broken = copy.deepcopy(data)
    broken["stages"][0]["status"] = "BROKEN"
    broken["gates"][1]["value"] = "high"
    with pytest.raises(ResultsSchemaError, match=r"2 problem\(s\)[\s\S]*Re-create it with `robaudit audit`"):
        validate(broken)


def test_schema_covers_exactly_the_record_fields() -> None:
    """A field added to robaudit/results.py must be added to the published schema too."""
    import dataclasses

    from robaudit.results import GateResult, ModelRecord, StageResult

    schema = load_schema()
    pairs = [(schema, AuditResult), (schema["$defs"]["stage"], StageResult),
             (schema["$defs"]["gate"], GateResult), (schema["$defs"]["model"], ModelRecord)]
    for sub, cls in pairs:
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(sub["properties"]) == fields, cls.__name__
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        assert set(sub["required"]) == required, cls.__name__
        assert sub["additionalProperties"] is False
