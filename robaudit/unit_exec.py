"""Run one work unit on the audit device; back off and retry on out-of-memory instead of failing.

Back-off order, each retry starting from the same generator state:
1. halve the stage's ``batch_size`` parameter (kept for the rest of the stage on this process);
2. at batch size 1 (or for stages without one), split the unit's samples in two halves
   (stages whose units are whole-data-set units cannot be split);
3. a single sample that still does not fit raises :class:`~robaudit.errors.OutOfMemoryError`.
Every retry is counted in the unit's ``oom_retries`` counter, so the report says it happened.
Batch sizes change how work is chunked, not what is computed; draws that a stage takes per
chunk can be arranged differently after a back-off, exactly as with a smaller configured batch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch

from robaudit.data import Batch
from robaudit.device import is_out_of_memory, release_memory
from robaudit.errors import OutOfMemoryError, ParameterError
from robaudit.model import ModelAdapter
from robaudit.seeding import derive_seed, make_generator
from robaudit.stage import Stage, UnitOutput

log = logging.getLogger(__name__)
OOM_COUNTER = "oom_retries"


class UnitExecutor:
    """Executes work units of configured stages on one device, remembering batch-size back-offs."""

    def __init__(self, device: torch.device, root_seed: int) -> None:
        self.device = device
        self.root_seed = root_seed
        self._backed_off: dict[str, Stage] = {}

    def run(self, sid: str, stage: Stage, model: ModelAdapter, batch: Batch,
            key: str) -> tuple[dict[str, np.ndarray], dict[str, float], float]:
        """``(arrays, counters, seconds)`` of one unit; arrays are NumPy on the CPU.

        The generator is seeded from ``(root seed, stage id, unit key)`` only: the same on every
        rank, device and model, so sharded, resumed and single-process runs draw alike.
        """
        t0 = time.perf_counter()
        gen = make_generator(derive_seed(self.root_seed, sid, key))
        splittable = type(stage).unit_size is not None
        out, retries = self._attempt(sid, stage, model, batch.to(self.device), gen, splittable)
        arrays = {k: _to_numpy(v) for k, v in out.arrays.items()}
        counters = {k: float(v) for k, v in out.counters.items()}
        if retries:
            counters[OOM_COUNTER] = counters.get(OOM_COUNTER, 0.0) + retries
        return arrays, counters, time.perf_counter() - t0

    def _attempt(self, sid: str, stage: Stage, model: ModelAdapter, batch: Batch,
                 generator: torch.Generator, splittable: bool) -> tuple[UnitOutput, int]:
        retries = 0
        while True:
            current = self._backed_off.get(sid, stage)
            state = generator.get_state()
            message = ""
            try:
                return current.run_unit(model, batch, generator=generator), retries
            except Exception as err:  # noqa: BLE001 - only out-of-memory is handled here
                if not is_out_of_memory(err):
                    raise
                message = str(err).splitlines()[0][:200]
            # outside the except block, so the failed attempt's tensors can be freed
            release_memory(self.device)
            generator.set_state(state)
            retries += 1
            smaller = _halved_batch_size(current)
            if smaller is not None:
                log.warning("%s: out of memory on %s (%s); retrying with batch_size %d", sid, self.device,
                            message, smaller.params.batch_size)
                self._backed_off[sid] = smaller
                continue
            if splittable and len(batch) > 1:
                half = len(batch) // 2
                log.warning("%s: out of memory on %s at the smallest batch size; splitting a unit of %d samples",
                            sid, self.device, len(batch))
                first, r1 = self._attempt(sid, stage, model, _rows(batch, 0, half), generator, True)
                second, r2 = self._attempt(sid, stage, model, _rows(batch, half, len(batch)), generator, True)
                return _concat(first, second), retries + r1 + r2
            raise OutOfMemoryError(
                f"stage {sid!r} ran out of memory on {self.device} even at batch size 1"
                f"{' and one sample' if splittable else ' (its unit is the whole data set)'}: {message}; "
                "lower the stage's n or its sample budget, free the device, or run with --device cpu")


def _halved_batch_size(stage: Stage) -> Stage | None:
    params = stage.params
    size = getattr(params, "batch_size", None)
    if not dataclasses.is_dataclass(params) or not isinstance(size, int) or size <= 1:
        return None
    try:
        return type(stage)(dataclasses.replace(params, batch_size=size // 2))
    except ParameterError:
        return None


def _rows(batch: Batch, start: int, stop: int) -> Batch:
    return Batch(batch.x[start:stop], batch.y[start:stop], batch.ids[start:stop])


def _concat(a: UnitOutput, b: UnitOutput) -> UnitOutput:
    arrays = {k: np.concatenate([_to_numpy(a.arrays[k]), _to_numpy(b.arrays[k])]) for k in a.arrays}
    counters = {k: float(a.counters.get(k, 0.0)) + float(b.counters.get(k, 0.0))
                for k in {*a.counters, *b.counters}}
    return UnitOutput(arrays, counters)


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)
