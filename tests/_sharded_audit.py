"""Test harness started by torchrun: one rank of a sharded audit, with a unit log and a kill switch.

Usage: python -m torch.distributed.run --nproc-per-node N tests/_sharded_audit.py CONFIG OUT
       [--resume] [--kill-rank R --kill-after K]

Every committed unit is appended to OUT/units.rank<R>.log (after it is committed). With
--kill-rank, that rank dies with os._exit (like kill -9) after K committed units.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from robaudit.config import load_config
from robaudit.outputs import write_outputs
from robaudit.runner import AuditOptions, run_audit
from robaudit.sharding import RankContext, process_group


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--kill-rank", type=int, default=-1)
    ap.add_argument("--kill-after", type=int, default=0)
    args = ap.parse_args()
    ranks = RankContext.from_env()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    committed = 0

    def on_unit(key: str) -> None:
        nonlocal committed
        with open(out / f"units.rank{ranks.rank}.log", "a", encoding="utf-8") as f:
            f.write(key + "\n")
        committed += 1
        if ranks.rank == args.kill_rank and committed >= args.kill_after:
            os._exit(9)

    with process_group(ranks):
        result = run_audit(load_config(args.config), out,
                           AuditOptions(resume=args.resume, device="cpu", ranks=ranks, on_unit=on_unit))
    if result is not None:
        write_outputs(result, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
