"""The run store: every finished work unit committed atomically to SQLite in the output dir.

An interrupted or killed audit resumes from here (``--resume``) without recomputing the
units it finished. The store is bound to a fingerprint of everything that determines the
results (resolved config, model fingerprints, data ids, robaudit version); resuming with
anything else is refused.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import numpy as np

from robaudit.errors import ConfigError

STORE_NAME = "run_store.sqlite"


class RunStore:
    def __init__(self, out_dir: Path, fingerprint: str, *, resume: bool) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / STORE_NAME
        if self.path.exists() and not resume:
            self.path.unlink()
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
