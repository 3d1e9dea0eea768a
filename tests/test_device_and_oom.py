"""--device resolution and the out-of-memory back-off of work units (simulated OOM on CPU)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from robaudit.data import Batch
from robaudit.device import is_out_of_memory, resolve_device
from robaudit.errors import ConfigError, ExitCode, OutOfMemoryError
from robaudit.model import InputSpec, TorchModelAdapter
from robaudit.registry import STAGES
from robaudit.stage import Stage, StageKind, StageOutput, UnitOutput
from robaudit.unit_exec import OOM_COUNTER, UnitExecutor
from tests.test_runner_cli import run_cli, write_config

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass(frozen=True)
class _BatchedParams:
    batch_size: int = 64


class _NeedsSmallBatches(Stage):
    """Draws noise per sample from the generator, in chunks of batch_size; OOM above 16 per chunk."""

    name = "needs_small_batches"
    kind = StageKind.ACCURACY
    Params = _BatchedParams
    unit_size = 32
    calls: list[int] = []

    def run_unit(self, model, batch, *, generator):  # type: ignore[no-untyped-def]
        type(self).calls.append(self.params.batch_size)
        first = torch.rand((), generator=generator)  # consumed before the failure
        if self.params.batch_size > 16:
            raise OOM("CUDA out of memory. Tried to allocate 20.00 GiB")
        noise = torch.rand(len(batch), generator=generator)
        return UnitOutput({"noise": (noise + first).numpy(), "pred": model.predict(batch.x).numpy()}, {"forward": 1})

    def summarize(self, arrays, data, counters):  # type: ignore[no-untyped-def]
        return StageOutput(metrics={"mean_noise": float(arrays["noise"].mean())})


class _NeedsSmallUnits(_NeedsSmallBatches):
    """No batch_size to back off: only splitting the unit helps (OOM above 3 samples)."""

    name = "needs_small_units"
    Params = type("P", (), {})  # type: ignore[assignment]

    def run_unit(self, model, batch, *, generator):  # type: ignore[no-untyped-def]
        if len(batch) > 3:
            raise RuntimeError("CUDA error: out of memory")
        return UnitOutput({"ids": np.array([int(i.split(":")[-1]) for i in batch.ids])}, {"forward": 1})


def _model() -> TorchModelAdapter:
    torch.manual_seed(0)
    return TorchModelAdapter(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)),
                             InputSpec((3, 2, 2), 3), pixel_space=True)


def _batch(n: int) -> Batch:
    return Batch(torch.rand(n, 3, 2, 2), torch.zeros(n, dtype=torch.long), tuple(f"s:{i}" for i in range(n)))


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cpu"):
            resolve_device("cuda")


def test_cli_refuses_cuda_without_gpu(model_dir: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(["audit", str(write_config(tmp_path, model_dir)), "--out", str(tmp_path / "o"),
                            "--device", "cuda", "-q"])
    assert code == ExitCode.USAGE and "torch.cuda.is_available() is false" in err


def test_out_of_memory_detection() -> None:
    assert is_out_of_memory(OOM("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only runtime errors


def test_batch_size_backs_off_and_retries_from_the_same_generator_state() -> None:
    model, batch = _model(), _batch(20)
    _NeedsSmallBatches.calls = []
    ex = UnitExecutor(torch.device("cpu"), root_seed=7)
    arrays, counters, _ = ex.run("s", _NeedsSmallBatches(_BatchedParams(64)), model, batch, "unit0")
    assert _NeedsSmallBatches.calls == [64, 32, 16] and counters[OOM_COUNTER] == 2
    # the result is the one a run configured with batch_size 16 gives: same draws, same predictions
    ref, ref_counters, _ = UnitExecutor(torch.device("cpu"), 7).run("s", _NeedsSmallBatches(_BatchedParams(16)),
                                                                     model, batch, "unit0")
    np.testing.assert_array_equal(arrays["noise"], ref["noise"])
    np.testing.assert_array_equal(arrays["pred"], ref["pred"])
    assert OOM_COUNTER not in ref_counters
    _NeedsSmallBatches.calls = []
    _, counters, _ = ex.run("s", _NeedsSmallBatches(_BatchedParams(64)), model, batch, "unit1")
    assert _NeedsSmallBatches.calls == [16] and OOM_COUNTER not in counters  # the back-off is remembered


def test_units_split_in_order_when_there_is_no_batch_size() -> None:
    ex = UnitExecutor(torch.device("cpu"), root_seed=0)
    arrays, counters, _ = ex.run("u", _NeedsSmallUnits(None), _model(), _batch(13), "k")
    assert arrays["ids"].tolist() == list(range(13))  # every sample once, in order
    assert counters["forward"] == 5  # 13 -> 6 + 7 -> (3 + 3) + (3 + 4) -> 3 + 3 + 3 + (2 + 2)
    assert counters[OOM_COUNTER] == 4  # one per failed attempt: 13, 6, 7 and 4 samples


def test_a_single_sample_that_does_not_fit_is_an_error() -> None:
    class Hopeless(_NeedsSmallUnits):
        def run_unit(self, model, batch, *, generator):  # type: ignore[no-untyped-def]
            raise OOM("CUDA out of memory")

    with pytest.raises(OutOfMemoryError, match="even at batch size 1 and one sample"):
        UnitExecutor(torch.device("cpu"), 0).run("h", Hopeless(None), _model(), _batch(4), "k")


def test_other_errors_are_not_retried() -> None:
    class Broken(_NeedsSmallUnits):
        def run_unit(self, model, batch, *, generator):  # type: ignore[no-untyped-def]
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        UnitExecutor(torch.device("cpu"), 0).run("b", Broken(None), _model(), _batch(4), "k")


def test_backoff_is_reported_in_the_stage_result(model_dir: Path, tmp_path: Path) -> None:
    STAGES.register("needs_small_batches", _NeedsSmallBatches)
    try:
        extra = '[[stages]]\nid = "small"\nstage = "needs_small_batches"\n'
        code, _, err = run_cli(["audit", str(write_config(tmp_path, model_dir, extra=extra, n=40)),
                                "--out", str(tmp_path / "o"), "-q", "--device", "cpu"])
    finally:
        STAGES.unregister("needs_small_batches")
    assert code == 0, err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    small = next(s for s in res["stages"] if s["id"] == "small")
    assert small["status"] == "OK" and small["budget"]["total_oom_retries"] == 2
    assert any("out of memory 2 time(s)" in n for n in small["notes"])
    assert res["environment"]["device"] == "cpu" and res["environment"]["world_size"] == 1
