"""End to end through the runner and the CLI: exit codes, outputs, gates, resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from robaudit.cli import Env, main
from robaudit.registry import STAGES
from robaudit.stage import Stage, StageKind, StageOutput


def write_config(d: Path, model_dir: Path, *, gates: str = "", extra: str = "", n: int = 120) -> Path:
    cfg = d / "audit.toml"
    cfg.write_text(f"""
seed = 1
unit_size = 16
[model]
name = "tiny <script>alert(1)</script>"
source = "{model_dir}/tiny.pt"
factory = "{model_dir}/factories.py:tiny_cnn"
input = {{ shape = [3, 8, 8], num_classes = 10, mean = [0.5], std = [0.5] }}
[data]
source = "digits"
n = {n}
[[stages]]
id = "clean"
stage = "clean_accuracy"
{extra}
{gates}
""")
    return cfg


def run_cli(args: list[str]) -> tuple[int, str, str]:
    import io

    out, err = io.StringIO(), io.StringIO()
    code = main(args, Env(stdout=out, stderr=err))
    return code, out.getvalue(), err.getvalue()


def test_audit_writes_all_outputs_and_passes(model_dir: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, model_dir, gates='[[gates]]\nmetric = "clean.accuracy"\nop = ">="\nthreshold = 0.0')
    code, out, err = run_cli(["audit", str(cfg), "--out", str(tmp_path / "o")])
    assert code == 0, err
    for name in ("results.json", "report.html", "junit.xml", "summary.md"):
        assert (tmp_path / "o" / name).is_file()
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["verdict"] == "PASS" and res["stages"][0]["status"] == "OK"
    assert len(res["data"]["ids"]) == 120 and res["models"][0]["fingerprint"]
    html = (tmp_path / "o" / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_failing_gate_exits_1_and_warn_gate_does_not(model_dir: Path, tmp_path: Path) -> None:
    gates = ('[[gates]]\nmetric = "clean.accuracy"\nthreshold = 0.99\nseverity = "warn"\n'
             '[[gates]]\nmetric = "clean.ece"\nop = "<="\nthreshold = 1.0\n')
    code, _, _ = run_cli(["audit", str(write_config(tmp_path, model_dir, gates=gates)), "--out", str(tmp_path / "w"), "-q"])
    assert code == 0
    assert json.loads((tmp_path / "w" / "results.json").read_text())["verdict"] == "WARN"
    gates = '[[gates]]\nmetric = "clean.accuracy"\nthreshold = 0.99\n'
    code, _, _ = run_cli(["audit", str(write_config(tmp_path, model_dir, gates=gates)), "--out", str(tmp_path / "f"), "-q"])
    assert code == 1


def test_missing_metric_never_passes(model_dir: Path, tmp_path: Path) -> None:
    gates = '[[gates]]\nmetric = "clean.no_such_metric"\nop = "<="\nthreshold = 1e9\n'
    code, _, _ = run_cli(["audit", str(write_config(tmp_path, model_dir, gates=gates)), "--out", str(tmp_path / "m"), "-q"])
    assert code == 1
    gate = json.loads((tmp_path / "m" / "results.json").read_text())["gates"][0]
    assert gate["passed"] is False and "not produced" in gate["message"]


@dataclass(frozen=True)
class _BoomParams:
    pass


class _Boom(Stage):
    name = "boom_test"
    kind = StageKind.ACCURACY
    Params = _BoomParams

    def run_unit(self, model, batch, *, generator):  # type: ignore[no-untyped-def]
        raise RuntimeError("kaboom")

    def summarize(self, arrays, data, counters):  # type: ignore[no-untyped-def]
        return StageOutput(metrics={})


def test_stage_error_exits_3_and_gate_on_it_fails(model_dir: Path, tmp_path: Path) -> None:
    STAGES.register("boom_test", _Boom)
    try:
        extra = '[[stages]]\nid = "boom"\nstage = "boom_test"\n'
        gates = '[[gates]]\nmetric = "boom.x"\nthreshold = 0\n'
        code, _, _ = run_cli(["audit", str(write_config(tmp_path, model_dir, extra=extra, gates=gates)),
                              "--out", str(tmp_path / "e"), "-q"])
    finally:
        STAGES.unregister("boom_test")
    assert code == 3
    res = json.loads((tmp_path / "e" / "results.json").read_text())
    boom = next(s for s in res["stages"] if s["id"] == "boom")
    assert boom["status"] == "ERROR" and "kaboom" in boom["error"]
    assert res["gates"][0]["passed"] is False and res["verdict"] == "ERROR"
    assert next(s for s in res["stages"] if s["id"] == "clean")["status"] == "OK"  # nothing else lost


@pytest.mark.parametrize("mutation, match", [
    ('stages_param', "stages[0].params.binz"),
    ('unknown_top', "modle"),
    ('bad_gate', "names no stage id"),
])
def test_config_errors_exit_2_with_key_path(model_dir: Path, tmp_path: Path, mutation: str, match: str) -> None:
    cfg = write_config(tmp_path, model_dir)
    text = cfg.read_text()
    text = {
        "stages_param": text.replace('stage = "clean_accuracy"', 'stage = "clean_accuracy"\nparams = { binz = 3 }'),
        "unknown_top": "modle = 1\n" + text,
        "bad_gate": text + '\n[[gates]]\nmetric = "nope.accuracy"\nthreshold = 0.5\n',
    }[mutation]
    cfg.write_text(text)
    code, _, err = run_cli(["audit", str(cfg), "--out", str(tmp_path / "x")])
    assert code == 2 and match in err


def test_cli_usage_errors_exit_2(model_dir: Path, tmp_path: Path) -> None:
    assert run_cli(["audit", str(model_dir / "tiny.pt")])[0] == 2  # no --data
    code, _, err = run_cli(["audit", str(model_dir / "pickled.pt"), "--data", "digits", "--input-shape", "3,8,8",
                            "--out", str(tmp_path / "p")])
    assert code == 2 and "allow-unsafe-pickle" in err
    assert run_cli(["audit", "nowhere.onnx", "--data", "digits"])[0] == 2
    assert run_cli(["bogus"])[0] == 2


def test_audit_model_directly_with_min_accuracy(model_dir: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(["audit", str(model_dir / "tiny_ts.pt"), "--data", "digits", "--n", "40",
                              "--input-shape", "3,8,8", "--stages", "clean", "--min-accuracy", "0.95",
                              "--out", str(tmp_path / "d")])
    assert code == 1, err  # an untrained net is far below 95%
    res = json.loads((tmp_path / "d" / "results.json").read_text())
    assert res["gates"][0]["metric"] == "clean.accuracy"


def test_report_and_compare(model_dir: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, model_dir)
    assert run_cli(["audit", str(cfg), "--out", str(tmp_path / "a"), "-q"])[0] == 0
    (tmp_path / "a" / "report.html").unlink()
    code = subprocess.run(
        [sys.executable, "-c",
         "import sys; from robaudit.cli import main; c = main(['report', sys.argv[1]]); "
         "assert 'torch' not in sys.modules, 'report must not load torch'; sys.exit(c)",
         str(tmp_path / "a" / "results.json")], capture_output=True, text=True)
    assert code.returncode == 0, code.stderr
    assert (tmp_path / "a" / "report.html").is_file()
    new = json.loads((tmp_path / "a" / "results.json").read_text())
    new["stages"][0]["metrics"]["accuracy"] -= 0.05
    (tmp_path / "new.json").write_text(json.dumps(new))
    code, out, _ = run_cli(["compare", str(tmp_path / "a" / "results.json"), str(tmp_path / "new.json"),
                            "--max-drop", "0.01", "--metric", "clean.accuracy", "--markdown", str(tmp_path / "c.md")])
    assert code == 1 and "FAIL" in out and "| metric |" in (tmp_path / "c.md").read_text()
    assert run_cli(["compare", str(tmp_path / "a" / "results.json"), str(tmp_path / "new.json"),
                    "--max-drop", "0.1"])[0] == 0


def test_baseline_max_drop_gate(model_dir: Path, tmp_path: Path) -> None:
    gates = '[[gates]]\nmetric = "clean.accuracy"\nmax_drop = 0.0\n'
    cfg = write_config(tmp_path, model_dir, gates=gates)
    assert run_cli(["audit", str(cfg), "--out", str(tmp_path / "nb"), "-q"])[0] == 1  # no baseline given
    base = json.loads((tmp_path / "nb" / "results.json").read_text())
    base["stages"][0]["metrics"]["accuracy"] += 0.2
    (tmp_path / "base.json").write_text(json.dumps(base))
    code, _, _ = run_cli(["audit", str(cfg), "--out", str(tmp_path / "b"), "-q", "--baseline", str(tmp_path / "base.json")])
    assert code == 1
    gate = json.loads((tmp_path / "b" / "results.json").read_text())["gates"][0]
    assert "regression" in gate["message"] and gate["baseline_value"] is not None


def _metrics(path: Path) -> list[tuple[str, dict[str, float]]]:
    res = json.loads(path.read_text())
    return [(s["id"], s["metrics"]) for s in res["stages"]]


def test_killed_audit_resumes_with_identical_metrics(model_dir: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, model_dir, n=600)
    text = cfg.read_text().replace("unit_size = 16", "unit_size = 2")
    cfg.write_text(text)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    assert run_cli(["audit", str(cfg), "--out", str(tmp_path / "full"), "-q"])[0] == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "robaudit", "audit", str(cfg), "--out", str(out), "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = out / "run_store.sqlite"
    done = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if store.exists():
            try:
                with sqlite3.connect(str(store), timeout=1) as db:
                    done = db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
            except sqlite3.Error:
                done = 0
            if done >= 20:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 20 <= done < 300, f"could not catch the audit mid-run (units done: {done})"
    assert not (out / "results.json").exists()
    code, _, _ = run_cli(["audit", str(cfg), "--out", str(out), "-q", "--resume"])
    assert code == 0
    assert _metrics(out / "results.json") == _metrics(tmp_path / "full" / "results.json")


def test_resume_refuses_a_different_audit(model_dir: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, model_dir)
    assert run_cli(["audit", str(cfg), "--out", str(tmp_path / "r"), "-q"])[0] == 0
    cfg.write_text(cfg.read_text().replace("n = 120", "n = 60"))
    code, _, err = run_cli(["audit", str(cfg), "--out", str(tmp_path / "r"), "-q", "--resume"])
    assert code == 2 and "different audit" in err


def test_list_and_validate(model_dir: Path, tmp_path: Path) -> None:
    code, out, _ = run_cli(["list", "metrics"])
    assert code == 0 and "clean_accuracy" in out and "ece" in out
    code, out, _ = run_cli(["validate", str(write_config(tmp_path, model_dir))])
    assert code == 0 and "OK" in out


def test_interrupt_keeps_units_and_exits_130(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robaudit import runner

    cfg = write_config(tmp_path, model_dir)
    calls = {"n": 0}
    original = runner.AuditOptions

    def interrupting(**kw):  # type: ignore[no-untyped-def]
        def on_unit(key: str) -> None:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return original(**kw, on_unit=on_unit)

    monkeypatch.setattr(runner, "AuditOptions", interrupting)
    code, _, err = run_cli(["audit", str(cfg), "--out", str(tmp_path / "i")])
    assert code == 130 and "--resume" in err
    with sqlite3.connect(str(tmp_path / "i" / "run_store.sqlite")) as db:
        assert db.execute("SELECT COUNT(*) FROM units").fetchone()[0] == 3
    np.testing.assert_equal(calls["n"], 3)


def test_results_json_matches_published_schema(model_dir: Path, tmp_path: Path) -> None:
    from robaudit.reports.schema import validate

    cfg = write_config(tmp_path, model_dir, gates='[[gates]]\nmetric = "clean.accuracy"\nthreshold = 0.5\n')
    run_cli(["audit", str(cfg), "--out", str(tmp_path / "s"), "-q"])
    validate(json.loads((tmp_path / "s" / "results.json").read_text()))
    broken = json.loads((tmp_path / "s" / "results.json").read_text())
    del broken["verdict"]
    (tmp_path / "s" / "results.json").write_text(json.dumps(broken))
    assert run_cli(["report", str(tmp_path / "s" / "results.json")])[0] == 2


@pytest.mark.parametrize("params, match", [
    ("{ patch_size = 3 }", "divide"),       # cannot fit the 8x8 model: found before any work starts
    ("{ severity = 0 }", "severity"),       # invalid on its own: found at config validation
])
def test_bad_stage_parameters_exit_2_before_any_work(model_dir: Path, tmp_path: Path, params: str, match: str) -> None:
    extra = f'[[stages]]\nid = "pc"\nstage = "patch_corruption"\nparams = {params}\n'
    code, _, err = run_cli(["audit", str(write_config(tmp_path, model_dir, extra=extra)), "--out", str(tmp_path / "b")])
    assert code == 2 and match in err and "stages[1].params" in err
    assert not (tmp_path / "b" / "results.json").exists()
