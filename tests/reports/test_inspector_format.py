"""The attention_inspector figure format: validation and safe JSON embedding."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from robaudit.reports.inspector import check_inspector, script_json

from robaudit.results import AuditResult


def _fig(audit: AuditResult) -> dict[str, Any]:
    fig = next(f for s in audit.stages for f in s.figures if f["type"] == "attention_inspector")
    return copy.deepcopy(fig)


def test_fixture_figure_is_well_formed(audit: AuditResult) -> None:
    fig = _fig(audit)
    assert check_inspector(fig) == []
    view = fig["images"][0]["views"][0]
    n = fig["grid"] ** 2
    attn = base64.b64decode(view["attn"])
    assert len(attn) == fig["layers"] * fig["heads"] * n * n
    assert max(attn[:n]) == 255  # rows are max-scaled to 255


def test_each_kind_of_defect_is_named(audit: AuditResult) -> None:
    fig = _fig(audit)
    view = fig["images"][1]["views"][2]
    view["rollout"] = base64.b64encode(b"\x00" * 10).decode()
    view["version"] = "noisy"
    view["patch"] = [[0, 4]]
    view["temperature"] = float("nan")
    view["png"] = "not base64!"
    problems = check_inspector(fig)
    where = "images[1].views[2]"
    assert f"{where}.rollout must be base64 of 256 uint8 values (16, 16), got 10 bytes" in problems
    assert any(p.startswith(f"{where}.version must be one of") for p in problems)
    assert any(p.startswith(f"{where}.patch must be") for p in problems)
    assert any(p.startswith(f"{where}.temperature") for p in problems)
    assert any(p.startswith(f"{where}.png") for p in problems)
    assert len(problems) == 5
    assert check_inspector({**fig, "grid": 0})[0].startswith("grid must be a positive integer")
    assert check_inspector({**fig, "images": []}) == ["images must be a non-empty list"]
    assert check_inspector({"type": "line"}) == ["not an attention_inspector figure"]


def test_script_json_cannot_close_a_script_block_and_round_trips() -> None:
    data = {"label": "</script><script>alert(1)</script><!--", "amp": "a&b", "sep": "x\u2028y",
            "nan": float("nan"), "nested": [{"t": "</SCRIPT>"}]}
    text = str(script_json(data))
    for bad in ("<", ">", "&", "\u2028"):
        assert bad not in text
    back = json.loads(text)
    assert back["label"] == data["label"] and back["nested"][0]["t"] == "</SCRIPT>" and back["sep"] == "x\u2028y"
    assert back["nan"] is None
