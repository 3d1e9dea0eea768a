"""benchmarks/run_all.py: RESULT_JSON parsing, target verdicts, the RESULTS.md writer, subprocess handling.

All on fake results (fast); the benchmarks themselves are not run here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


R = _load("_results")
RUN_ALL = _load("run_all")
SCALING = _load("bench_scaling")


def test_parse_result_json_takes_the_last_prefixed_line() -> None:
    out = 'noise\nRESULT_JSON {"a": 1}\nmore\nRESULT_JSON {"a": 2}\ntrailing text\n'
    assert R.parse_result_json(out) == {"a": 2}
    assert R.parse_result_json("no result here\n") is None
    assert R.parse_result_json("RESULT_JSON {broken\n") is None
    assert R.parse_result_json("RESULT_JSON [1, 2]\n") is None
    assert R.parse_result_json('  RESULT_JSON {"a": 1}\n') is None  # must start the line


def _pgd(robaudit: float, torchattacks: float, floor: float) -> dict:
    ips = {"floor": floor, "torchattacks": torchattacks, "robaudit": robaudit, "robaudit(no early stop)": robaudit}
    return {"models": {"resnet18": {"img_per_s": ips, "fooled": 3}}}


@pytest.mark.parametrize(("ours", "theirs", "floor", "ok"), [
    (90.0, 80.0, 100.0, True),    # 1.125x torchattacks, 0.90 of floor
    (84.0, 80.0, 100.0, False),   # faster than torchattacks but below 0.85 of floor
    (86.0, 90.0, 100.0, False),   # above 0.85 of floor but slower than torchattacks
    (float("nan"), 80.0, 100.0, False),
])
def test_pgd_targets(ours: float, theirs: float, floor: float, ok: bool) -> None:
    rows = R.eval_pgd(_pgd(ours, theirs, floor))
    judged = [r for r in rows if r.passed is not None]
    assert len(judged) == 2 and all(r.passed is ok for r in judged)
    if math.isfinite(ours):
        assert judged[0].vs_reference == pytest.approx(ours / theirs)
        assert judged[0].vs_floor == pytest.approx(ours / floor)
    else:
        assert judged[0].vs_reference is None


@pytest.mark.parametrize(("ours", "ref", "ok"), [(1.0, 12.0, True), (1.0, 10.0, True), (1.0, 9.9, False)])
def test_corruption_speedup_target(ours: float, ref: float, ok: bool) -> None:
    data = {"sizes": {"32": {"images": 64, "robaudit_s": ours, "imagecorruptions_s": ref,
                             "per_corruption": {"fog": {"robaudit_s": 0.1, "imagecorruptions_s": 0.2},
                                                "snow": {"robaudit_s": 0.1, "imagecorruptions_s": 5.0}}}}}
    rows = R.eval_corruptions(data)
    assert rows[0].passed is ok and rows[0].vs_reference == pytest.approx(ref / ours)
    assert rows[1].passed is None and rows[1].value.startswith("fog 2.0x")  # slowest first


def test_smoothing_targets() -> None:
    data = {"n": 100000, "n0": 100, "radius": 0.25, "floor_samples_per_s": 1000.0, "sampler_samples_per_s": 950.0,
            "sequential": {"images": 20, "mean_samples": 10010.0, "fixed_samples": 100100},
            "agreement": {"images": 100, "n": 100000, "agree": 98},
            "simulated": {"replicates": 1000, "agree": 995}}
    rows = R.eval_smoothing(data)
    assert [r.passed for r in rows] == [True, True, False, True]  # agreement 98/100 < 0.99
    assert rows[0].vs_floor == pytest.approx(0.95)
    assert rows[1].vs_reference == pytest.approx(10.0)
    assert rows[2].vs_reference == pytest.approx(0.98)
    only_throughput = {k: data[k] for k in ("n", "n0", "radius", "floor_samples_per_s", "sampler_samples_per_s")}
    only_throughput["sampler_samples_per_s"] = 850.0
    (row,) = R.eval_smoothing(only_throughput)
    assert row.passed is False


def test_patch_lirpa_rows() -> None:
    (patch,) = R.eval_patch({"pairs": 64, "steps": 5, "attack_pair_steps_per_s": 80.0, "floor_pair_steps_per_s": 100.0})
    assert patch.passed is False and patch.vs_floor == pytest.approx(0.8)
    rows = R.eval_lirpa({"cases": [{"id": "cnn/CROWN", "wall_s": 2.0, "cpu_s": 2.0, "peak_mib": 50.0,
                                    "auto_lirpa_s": 1.0, "width": 1.0, "ref_width": 1.0},
                                   {"id": "cnn/alpha", "wall_s": 2.0, "cpu_s": 2.0, "peak_mib": 50.0,
                                    "auto_lirpa_s": None, "width": 1.0, "ref_width": 1.0}]})
    assert rows[0].vs_reference == pytest.approx(0.5) and rows[1].vs_reference is None
    assert all(r.passed is None for r in rows)


def test_linear_fit_and_scaling_rows() -> None:
    ns = [25.0, 50.0, 100.0, 200.0]
    fit = SCALING.linear_fit(ns, [3.0 + 0.2 * n for n in ns])
    assert fit["slope"] == pytest.approx(0.2) and fit["intercept"] == pytest.approx(3.0)
    assert fit["r2"] == pytest.approx(1.0)
    quad = SCALING.linear_fit(ns, [n * n for n in ns])
    assert quad["r2"] < 0.99
    with pytest.raises(ValueError):
        SCALING.linear_fit([1.0, 1.0], [2.0, 3.0])
    data = {"points": [{"n": int(n), "wall_s": 3 + 0.2 * n, "cpu_s": 2 + 0.1 * n, "stage_s": 0.1 * n} for n in ns],
            "fits": {"stage": {"slope": 0.1, "intercept": 0.0, "r2": 0.9}, "wall": fit, "cpu": fit}}
    rows = R.eval_scaling(data)
    assert [r.passed for r in rows[-3:]] == [False, None, None]  # judged on the stages' time only
    assert "200.0 ms/sample" in rows[-2].value and "R^2 0.9000" in rows[-3].value
    data["fits"]["stage"] = fit
    assert R.eval_scaling(data)[-3].passed is True


def test_scaling_config_text_rewrites_n_and_paths() -> None:
    text = SCALING.config_text(37)
    assert "\nn = 37\n" in text and "n = 100" not in text
    assert '"../' not in text and str(BENCH.parent.as_posix()) in text


def _result(name: str, rows: list, error: str | None = None, tail: list[str] | None = None) -> object:
    return R.BenchResult(name=name, command=f"python benchmarks/bench_{name}.py", seconds=12.3, returncode=0,
                         data={} if error is None else None, error=error, tail=tail or [], rows=rows)


def test_render_results() -> None:
    rows = [R.Row("q pass", "1.0", 1.5, 0.9, "t1", True), R.Row("q miss", "2.0", None, 0.5, "t2", False),
            R.Row("q info", "3.0")]
    text = R.render_results(
        [_result("pgd", rows), _result("causal", [], error="no RESULT_JSON line in the output",
                                       tail=["layer net.1: ratio 3.2x"])],
        {"cpu": "Fake CPU 9000", "cores": "2", "ram": "23.4 GiB", "load": "before: 7.1, 8, 9; after: 6, 7, 8"},
        {"python": "3.11.9", "torch": "2.14.1"}, quick=True, date="2026-11-27 20:00 UTC")
    assert "Fake CPU 9000" in text and "23.4 GiB" in text and "before: 7.1" in text
    assert "python 3.11.9, torch 2.14.1" in text
    assert "--quick" in text and "idle machine" in text
    assert "| pgd | 12 | 1/2 | ok |" in text
    assert "| causal | 12 | - | ERROR: no RESULT_JSON line in the output |" in text
    assert "| q pass | 1.0 | 1.50x | 0.90x | t1 | PASS |" in text
    assert "| q miss | 2.0 | - | 0.50x | t2 | MISS |" in text
    assert "| q info | 3.0 | - | - | - | - |" in text
    assert "layer net.1: ratio 3.2x" in text
    full = R.render_results([], {}, {}, quick=False, date="d")
    assert "Quick mode" not in full and "run_all.py` on d" in full


def test_run_one_parses_output_and_handles_failures(tmp_path: Path) -> None:
    ok = tmp_path / "ok.py"
    ok.write_text('print("hello")\nprint(\'RESULT_JSON {"x": 1.5}\')\n')
    res = RUN_ALL.run_one("ok", str(ok), [], timeout=60)
    assert res.error is None and res.data == {"x": 1.5} and res.returncode == 0
    bad = tmp_path / "bad.py"
    bad.write_text('import sys\nprint("partial")\nsys.exit("boom")\n')
    res = RUN_ALL.run_one("bad", str(bad), [], timeout=60)
    assert res.data is None and "exit status 1" in res.error and "boom" in res.error and res.tail == ["partial"]
    silent = tmp_path / "silent.py"
    silent.write_text('print("no json")\n')
    assert RUN_ALL.run_one("silent", str(silent), [], timeout=60).error == "no RESULT_JSON line in the output"
    slow = tmp_path / "slow.py"
    slow.write_text('import time\nprint("started", flush=True)\ntime.sleep(30)\n')
    res = RUN_ALL.run_one("slow", str(slow), [], timeout=1)
    assert res.error == "timed out after 1 s" and res.returncode is None


def test_machine_info_and_specs() -> None:
    info = RUN_ALL.machine_info()
    assert set(info) == {"cpu", "cores", "ram", "load"}
    specs = RUN_ALL.discover()
    assert {"pgd", "corruptions", "smoothing", "patch_attack", "lirpa", "scaling"} <= set(specs)
    assert set(R.EVALUATORS) <= set(specs)
    for script, *_ in specs.values():
        assert (BENCH / script).is_file()


def test_results_round_trip_and_merge() -> None:
    from dataclasses import asdict

    a = _result("pgd", [R.Row("q", "1.0", 1.5, None, "t", True)])
    b = _result("lirpa", [])
    back = R.result_from_json(json.loads(json.dumps(asdict(a))))
    assert back == a and isinstance(back.rows[0], R.Row)
    new_a = _result("pgd", [R.Row("q", "2.0", 0.5, None, "t", False)])
    extra = _result("zzz_new", [])
    merged = R.merge_results([b, a], [new_a, extra], ["pgd", "corruptions", "lirpa"])
    assert [r.name for r in merged] == ["pgd", "lirpa", "zzz_new"]
    assert merged[0] is new_a
    text = R.render_results(merged, {}, {}, quick=True, date="d", notes=["Re-run now: pgd."])
    assert "Re-run now: pgd." in text and "| q | 2.0 | 0.50x | - | t | MISS |" in text
