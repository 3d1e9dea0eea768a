"""The shipped demo models through the CLI: the ONNX export (black-box + twin) and the torch factory."""

from __future__ import annotations

import io
import json
from pathlib import Path

from robaudit.cli import Env, main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_onnx_demo_model_audits_with_twin_and_black_box_stages(tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    code = main(["audit", str(EXAMPLES / "models" / "digits_cnn.onnx"), "--data", "digits", "--n", "24",
                 "--stages", "clean,robust", "--min-accuracy", "0.9", "--out", str(out), "-q"],
                Env(stdout=io.StringIO(), stderr=io.StringIO()))
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    model = res["models"][0]
    assert model["spec"]["shape"] == [3, 32, 32] and model["spec"]["mean"] == [0.5, 0.5, 0.5]  # ONNX metadata
    assert model["provenance"]["twin"] == "ok" and model["provenance"]["twin_max_abs_diff"] <= 1e-4
    assert "gradients" in model["capabilities"]
    assert all(s["status"] == "OK" for s in res["stages"])


def test_demo_config_validates() -> None:
    err = io.StringIO()
    assert main(["validate", str(EXAMPLES / "demo.toml")], Env(stdout=io.StringIO(), stderr=err)) == 0, err.getvalue()
