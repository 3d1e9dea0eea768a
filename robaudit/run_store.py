"""The run store: every finished work unit committed atomically to SQLite in the output dir.

An interrupted or killed audit resumes from here (``--resume``) without recomputing the
units it finished. Under torchrun every rank commits to its own shard store
(``run_store.rank<R>.sqlite``) and rank 0 merges the shards into the main store. The store is bound to a fingerprint of everything that determines the
results (resolved config, model fingerprints, data ids, robaudit version); resuming with
anything else is refused.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from robaudit.errors import ConfigError

log = logging.getLogger(__name__)
STORE_NAME = "run_store.sqlite"
SHARD_PATTERN = re.compile(r"run_store\.rank(\d+)\.sqlite")
UnitKey = tuple[str, str, str, str]  # (model, variant, stage id, unit key)
UnitRow = tuple[str, str, str, str, bytes, str, float]


def shard_name(rank: int) -> str:
    return f"run_store.rank{rank}.sqlite"


def shard_paths(out_dir: Path) -> dict[int, Path]:
    """Rank -> shard store file found in ``out_dir``."""
    found = {}
    for path in out_dir.glob("run_store.rank*.sqlite"):
        match = SHARD_PATTERN.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def remove_store_file(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)


class RunStore:
    def __init__(self, out_dir: Path, fingerprint: str, *, resume: bool, name: str = STORE_NAME) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / name
        self.fingerprint = fingerprint
        if self.path.exists() and not resume:
            remove_store_file(self.path)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS units (model TEXT, variant TEXT, stage TEXT, unit TEXT, "
            "arrays BLOB NOT NULL, counters TEXT NOT NULL, duration REAL NOT NULL, "
            "PRIMARY KEY (model, variant, stage, unit))"
        )
        row = self._db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
        elif row[0] != fingerprint:
            self._db.close()
            raise ConfigError(
                f"{self.path} belongs to a different audit (config, model, data or robaudit version changed); "
                "resume only with the same inputs, or run without --resume (or with another --out) to start over"
            )

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM units").fetchone()[0])

    def keys(self) -> set[UnitKey]:
        return {tuple(r) for r in self._db.execute("SELECT model, variant, stage, unit FROM units")}  # type: ignore[misc]

    def rows(self, exclude: set[UnitKey] | frozenset[UnitKey] = frozenset()) -> Iterator[UnitRow]:
        """Every committed unit as a raw row (for merging shards), minus ``exclude``."""
        for row in self._db.execute("SELECT * FROM units"):
            if tuple(row[:4]) not in exclude:
                yield tuple(row)  # type: ignore[misc]

    def put_rows(self, rows: list[UnitRow]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO units VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def import_shards(self, out_dir: Path) -> int:
        """Merge every shard store left in ``out_dir`` (e.g. by killed ranks) into this store.

        Raises ConfigError if a shard belongs to another audit (different fingerprint).
        """
        imported = 0
        for rank, path in sorted(shard_paths(out_dir).items()):
            if path == self.path:
                continue
            shard = RunStore(out_dir, self.fingerprint, resume=True, name=path.name)
            try:
                rows = list(shard.rows(exclude=self.keys()))
            finally:
                shard.close()
            self.put_rows(rows)
            imported += len(rows)
            log.info("imported %d finished units from rank %d's shard %s", len(rows), rank, path)
        return imported

    def get(self, model: str, variant: str, stage: str, unit: str) -> tuple[dict[str, np.ndarray], dict[str, float], float] | None:
        row = self._db.execute(
            "SELECT arrays, counters, duration FROM units WHERE model=? AND variant=? AND stage=? AND unit=?",
            (model, variant, stage, unit),
        ).fetchone()
        if row is None:
            return None
        with np.load(io.BytesIO(row[0]), allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        return arrays, json.loads(row[1]), float(row[2])

    def put(self, model: str, variant: str, stage: str, unit: str, arrays: dict[str, np.ndarray],
            counters: dict[str, float], duration: float) -> None:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        self._db.execute(
            "INSERT OR REPLACE INTO units VALUES (?, ?, ?, ?, ?, ?, ?)",
            (model, variant, stage, unit, buf.getvalue(), json.dumps(counters), duration),
        )

    def close(self) -> None:
        self._db.close()
