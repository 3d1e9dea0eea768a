"""torchrun sharding: every rank computes a share of the work units, rank 0 merges them.

``torchrun --nproc-per-node N -m robaudit audit CONFIG --out DIR`` starts N copies of the
audit. Each loads the models and data and enumerates the same work units (fixed chunks of
sample ids: nothing is padded or duplicated, unlike a DistributedSampler). Units already in a
run store are skipped; the rest are dealt round-robin to the ranks, and every rank commits its
units to its own shard store (``run_store.rank<R>.sqlite``) as they finish. The shards are then
gathered into rank 0's main store (a ``gloo`` collective: the control plane never needs NCCL,
whatever the device), and rank 0 summarises and renders exactly as a single process would.

Seeds depend only on (root seed, stage id, unit key), never on the rank, so the results are
those of a single-process run for any N. A killed rank's finished units survive in its shard
and ``--resume`` (any N, or none) imports them; its unfinished units are redone.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from robaudit.errors import ConfigError
from robaudit.run_store import RunStore, UnitKey, remove_store_file, shard_name, shard_paths

log = logging.getLogger(__name__)
T = TypeVar("T")
COLLECTIVE_TIMEOUT = _dt.timedelta(hours=12)  # ranks wait for the slowest at the merge


@dataclass(frozen=True)
class RankContext:
    """This process's place in a torchrun job (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> RankContext:
        """Read torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``."""
        env = os.environ if environ is None else environ
        try:
            ctx = cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))
        except ValueError as err:
            raise ConfigError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {err}") from None
        if ctx.world_size < 1 or not 0 <= ctx.rank < ctx.world_size:
            raise ConfigError(f"bad torchrun environment: RANK={ctx.rank}, WORLD_SIZE={ctx.world_size}")
        return ctx


@contextmanager
def process_group(ctx: RankContext) -> Iterator[None]:
    """A gloo process group for the life of a sharded audit (nothing outside torchrun)."""
    if not ctx.sharded:
        yield
        return
    import torch.distributed as dist

    if "MASTER_ADDR" not in os.environ:
        raise ConfigError("WORLD_SIZE > 1 but MASTER_ADDR is not set: start sharded audits with torchrun "
                          "(torchrun --nproc-per-node N -m robaudit audit CONFIG)")
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", rank=ctx.rank, world_size=ctx.world_size, timeout=COLLECTIVE_TIMEOUT)
    try:
        yield
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def barrier(ctx: RankContext) -> None:
    """Wait for every rank (no-op outside torchrun)."""
    if ctx.sharded:
        import torch.distributed as dist

        dist.barrier()


def all_gather(obj: T) -> list[T]:
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj: T, ctx: RankContext) -> list[T] | None:
    import torch.distributed as dist

    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: T) -> T:
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@dataclass(frozen=True)
class UnitTask:
    """One work unit to compute: its store key and a callable that computes it."""

    key: UnitKey
    group: tuple[str, str, str]  # (model, variant, stage id): one failure skips the rest of it here
    compute: Callable[[], tuple[dict[str, Any], dict[str, float], float]]


def open_main_store(out_dir: Path, fingerprint: str, *, resume: bool, world_size: int) -> RunStore:
    """Rank 0's store. Resuming imports every shard left in ``out_dir``; a fresh run deletes the
    shards no rank of this job will overwrite (those of ranks >= world_size)."""
    if not resume:
        for rank, path in shard_paths(out_dir).items():
            if rank >= world_size or world_size == 1:
                remove_store_file(path)
    store = RunStore(out_dir, fingerprint, resume=resume)
    if resume:
        store.import_shards(out_dir)
    return store


def compute_shard(tasks: Sequence[UnitTask], ctx: RankContext, out_dir: Path, fingerprint: str, *,
                  resume: bool, main_store: RunStore | None, fail_fast: bool,
                  on_start: Callable[[int], None], on_unit: Callable[[str], None]) -> None:
    """All ranks: compute this rank's share of the unfinished tasks, then merge into ``main_store``.

    Args:
        tasks: every unit of the audit, in the same order on every rank.
        main_store: rank 0's main store (None on the other ranks).
        on_start: called with the number of units this rank will compute (progress).
        on_unit: called after each committed unit.

    A unit that raises is left undone (rank 0 recomputes it while summarising and records the
    stage's error) and the rest of its (model, variant, stage) is skipped on this rank.
    """
    shard = RunStore(out_dir, fingerprint, resume=resume, name=shard_name(ctx.rank))
    try:
        done = shard.keys() | (main_store.keys() if main_store is not None else set())
        finished = set().union(*all_gather(done))
        todo = [t for t in tasks if t.key not in finished]
        mine = todo[ctx.rank :: ctx.world_size]
        log.info("rank %d/%d: %d of %d units to compute (%d already finished)", ctx.rank, ctx.world_size,
                 len(mine), len(todo), len(tasks) - len(todo))
        on_start(len(mine))
        failed: set[tuple[str, str, str]] = set()
        for task in mine:
            if task.group in failed:
                continue
            try:
                arrays, counters, duration = task.compute()
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception:  # noqa: BLE001 - rank 0 redoes it and records the stage error
                if fail_fast:
                    raise
                log.exception("rank %d: unit %s failed; rank 0 will redo it and record the error", ctx.rank, task.key)
                failed.add(task.group)
                continue
            shard.put(*task.key, arrays, counters, duration)
            on_unit("/".join(task.key))
        merged = broadcast_from_main(main_store.keys() if main_store is not None else None)
        gathered = gather_to_main(list(shard.rows(exclude=merged)), ctx)
        if main_store is not None and gathered is not None:
            for rows in gathered:
                main_store.put_rows(rows)
            log.info("rank 0 merged %d units from %d ranks", sum(len(r) for r in gathered), ctx.world_size)
        barrier(ctx)  # every shard is merged: now they can go
    finally:
        shard.close()
    remove_store_file(shard.path)
