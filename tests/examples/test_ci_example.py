"""The CI integration example: the GitHub Actions workflow and its release-gate config.

The workflow is parsed as YAML and its steps checked; the audit step's shell script is run
with a fake ``robaudit`` to check that exit codes 1 and 3 fail the job and that the summary
step still publishes. The config is validated by robaudit itself, with the user's (absent)
model and data replaced by the shipped demo model and the digits set.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomllib

CI = Path(__file__).resolve().parents[2] / "examples" / "ci"
EXAMPLES = CI.parent
AUDIT_CMD = "robaudit audit audit.toml --out out --baseline baseline/results.json"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((CI / "github-actions.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    (job,) = workflow["jobs"].values()
    assert job["runs-on"]
    assert all(isinstance(s, dict) and ("run" in s or "uses" in s) for s in job["steps"])
    return job["steps"]


def _step(steps: list[dict[str, Any]], pred: Any) -> tuple[int, dict[str, Any]]:
    found = [(i, s) for i, s in enumerate(steps) if pred(s)]
    assert len(found) == 1, f"expected exactly one matching step, found {len(found)}"
    return found[0]


def _audit(steps: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    return _step(steps, lambda s: AUDIT_CMD in s.get("run", ""))


def test_workflow_triggers_and_setup(workflow: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert {"pull_request", "push"} <= set(triggers)
    assert workflow["name"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    assert any(u.startswith("actions/setup-python@") for u in uses)
    i_install, _ = _step(steps, lambda s: "pip install robaudit" in s.get("run", ""))
    i_audit, audit = _audit(steps)
    assert i_install < i_audit
    assert audit.get("id") and not audit.get("continue-on-error") and "if" not in audit


def test_reporting_steps_run_after_the_audit_whatever_its_outcome(steps: list[dict[str, Any]]) -> None:
    i_audit, _ = _audit(steps)
    i_sum, summary = _step(steps, lambda s: "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert "cat out/summary.md >>" in summary["run"]
    i_up, upload = _step(steps, lambda s: s.get("uses", "").startswith("actions/upload-artifact@"))
    paths = upload["with"]["path"].split()
    assert {"out/report.html", "out/results.json"} <= set(paths)
    i_junit, _ = _step(steps, lambda s: "out/junit.xml" in str(s.get("with", {})) and "uses" in s
                       and not s["uses"].startswith("actions/upload-artifact@"))
    for i, s in ((i_sum, summary), (i_up, upload), (i_junit, steps[i_junit])):
        assert i > i_audit
        assert s.get("if") == "always()"


def _expand(script: str, exit_code: int) -> str:
    return script.replace("${{ steps.audit.outputs.exit_code }}", str(exit_code))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("code", [0, 1, 2, 3])
def test_audit_step_propagates_the_exit_code(steps: list[dict[str, Any]], tmp_path: Path, code: int) -> None:
    _, audit = _audit(steps)
    _, summary = _step(steps, lambda s: "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "robaudit"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > args.txt\nmkdir -p out\necho '# fake summary {code}' > out/summary.md\n"
                    f"exit {code}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "GITHUB_OUTPUT": str(tmp_path / "gh_output"), "GITHUB_STEP_SUMMARY": str(tmp_path / "gh_summary")}
    run = subprocess.run(["bash", "-e", "-c", audit["run"]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == code  # 0 passes the job; 1, 2 and 3 fail it
    assert (tmp_path / "args.txt").read_text().split() == AUDIT_CMD.split()[1:] + ["--quiet"]
    assert f"exit_code={code}" in (tmp_path / "gh_output").read_text()
    if code in (1, 3):
        assert "::error" in run.stdout
    run = subprocess.run(["bash", "-e", "-c", _expand(summary["run"], code)], cwd=tmp_path, env=env)
    assert run.returncode == 0
    assert f"# fake summary {code}" in (tmp_path / "gh_summary").read_text()


def test_summary_step_without_summary_file(steps: list[dict[str, Any]], tmp_path: Path) -> None:
    _, summary = _step(steps, lambda s: "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(tmp_path / "gh_summary")}
    run = subprocess.run(["bash", "-e", "-c", _expand(summary["run"], 2)], cwd=tmp_path, env=env)
    assert run.returncode == 0
    assert "exit status 2" in (tmp_path / "gh_summary").read_text()


def test_audit_config_parses_with_baseline_gates() -> None:
    from robaudit.config import parse_config
    from robaudit.registry import STAGES

    raw = tomllib.loads((CI / "audit.toml").read_text(encoding="utf-8"))
    cfg = parse_config(raw, base_dir=None)
    stage_of = {s.id: s.stage for s in cfg.stages}
    assert {"robust_accuracy", "corruptions", "smoothing"} <= set(stage_of.values())
    drops = {g.metric.split(".", 1)[0] for g in cfg.gates if g.max_drop is not None}
    assert {stage_of[k] for k in drops} >= {"robust_accuracy", "corruptions", "smoothing"}
    for g in cfg.gates:  # every gated metric is one the stage documents (<...> = any suffix)
        sid, metric = g.metric.split(".", 1)
        docs = STAGES.get(stage_of[sid]).metric_docs
        patterns = [re.escape(k).replace(r"\<", "<").replace(r"\>", ">") for k in docs]
        patterns = [re.sub(r"<[^>]*>", r"[^.]+", p) for p in patterns]
        assert any(re.fullmatch(p, metric) for p in patterns), f"{g.metric} not in {list(docs)}"


def test_audit_config_validates_with_a_real_model(tmp_path: Path) -> None:
    """`robaudit validate` on the example with the demo ONNX model and the digits set in place."""
    from robaudit.cli import main

    text = (CI / "audit.toml").read_text(encoding="utf-8")
    text, n_model = re.subn(r'(?m)^source = "models/classifier\.onnx"',
                            f'source = "{(EXAMPLES / "models" / "digits_cnn.onnx").as_posix()}"', text)
    text, n_data = re.subn(r'(?m)^source = "data/holdout\.npz"', 'source = "digits"', text)
    assert n_model == 1 and n_data == 1
    cfg = tmp_path / "audit.toml"
    cfg.write_text(text, encoding="utf-8")
    assert main(["validate", str(cfg)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('metric = "clean.accuracy"', 'metric = "nosuchstage.accuracy"'), encoding="utf-8")
    assert main(["validate", str(bad)]) == 2
