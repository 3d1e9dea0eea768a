"""torchrun sharding on CPU (gloo, 2 processes): same results as one process, resume after a killed rank."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from robaudit.run_store import STORE_NAME, shard_paths

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path(__file__).with_name("_sharded_audit.py")
N_SAMPLES, UNIT = 40, 8
STAGES = ("clean", "robust", "corruptions", "smoothing", "whole")


def write_config(d: Path) -> Path:
    models = ROOT / "examples" / "models"
    cfg = d / "shard.toml"
    cfg.write_text(f"""
seed = 3
unit_size = {UNIT}
profile = "quick"
[model]
name = "digits_cnn"
source = "{models / 'digits_cnn.safetensors'}"
factory = "{ROOT / 'examples' / 'demo_models.py'}:make_cnn"
input = {{ shape = [3, 32, 32], num_classes = 10, mean = [0.5], std = [0.5] }}
[data]
source = "digits"
split = "test"
n = {N_SAMPLES}
[[stages]]
id = "clean"
stage = "clean_accuracy"
[[stages]]
id = "robust"
stage = "robust_accuracy"
params = {{ attacks = ["fgsm", "pgd"], steps = 5 }}
[[stages]]
id = "corruptions"
stage = "corruptions"
params = {{ corruptions = ["gaussian_noise", "shot_noise"], severities = [3, 5] }}
[[stages]]
id = "smoothing"
stage = "smoothing"
params = {{ n0 = 20, n = 300, batch_size = 200 }}
[[stages]]
id = "whole"
stage = "realistic_patch"
n = 24
""")
    return cfg


def torchrun(nproc: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--standalone", str(HARNESS), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def metrics(out: Path) -> dict[str, dict[str, float]]:
    res = json.loads((out / "results.json").read_text())
    assert [s["id"] for s in res["stages"]] == list(STAGES)
    assert all(s["status"] == "OK" for s in res["stages"]), [(s["id"], s.get("error")) for s in res["stages"]]
    return {s["id"]: s["metrics"] for s in res["stages"]}


def logged(out: Path) -> dict[int, list[str]]:
    return {int(p.name.split(".")[1][4:]): p.read_text().split() for p in out.glob("units.rank*.log")}


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("shard")
    cfg = write_config(d)
    torchrun(1, str(cfg), str(d / "single"))
    return cfg, d / "single"


def test_two_ranks_give_the_single_process_results(single: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, one = single
    out = tmp_path / "two"
    torchrun(2, str(cfg), str(out))
    assert metrics(out) == metrics(one)  # exact: same units, same seeds, same thread count
    units = logged(out)
    assert units[0] and units[1], "both ranks computed work units"
    assert not set(units[0]) & set(units[1]), "no unit computed twice"
    total = sum(len(v) for v in logged(one).values())
    assert len(units[0]) + len(units[1]) == total
    assert not shard_paths(out), "shard stores are removed once merged"
    with sqlite3.connect(out / STORE_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM units").fetchone()[0] == total


@pytest.mark.slow
def test_killed_rank_is_redone_on_resume_without_duplicates(single: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, one = single
    out = tmp_path / "killed"
    first = torchrun(2, str(cfg), str(out), "--kill-rank", "1", "--kill-after", "3", check=False)
    assert first.returncode != 0 and not (out / "results.json").exists()
    before = logged(out)
    assert len(before.get(1, [])) == 3 and shard_paths(out), "rank 1's finished units survive in its shard"
    for log in out.glob("units.rank*.log"):
        log.rename(log.with_suffix(".first"))
    torchrun(2, str(cfg), str(out), "--resume")
    after = logged(out)
    redone = [u for units in after.values() for u in units]
    assert len(redone) == len(set(redone)), "no unit computed twice in the resumed run"
    done_before = {u for units in before.values() for u in units}
    assert not done_before & set(redone), "nothing finished before the kill is recomputed"
    total = sum(len(v) for v in logged(one).values())
    assert len(done_before) + len(redone) <= total
    assert metrics(out) == metrics(one)
    assert not shard_paths(out)


@pytest.mark.slow
def test_resume_of_a_sharded_run_in_one_process(single: tuple[Path, Path], tmp_path: Path) -> None:
    """Shards of a killed 2-rank job are imported by a plain (unsharded) --resume."""
    cfg, one = single
    out = tmp_path / "mixed"
    torchrun(2, str(cfg), str(out), "--kill-rank", "0", "--kill-after", "4", check=False)
    assert shard_paths(out)
    for log in out.glob("units.rank*.log"):
        log.rename(log.with_suffix(".first"))
    torchrun(1, str(cfg), str(out), "--resume")
    total = sum(len(v) for v in logged(one).values())
    assert 0 < sum(len(v) for v in logged(out).values()) < total
    assert metrics(out) == metrics(one)
