"""pytest plugin: gate model releases inside a model repository's own test suite.

Installed with robaudit (entry point ``pytest11``). Example::

    def test_release_gates(robaudit_audit):
        result = robaudit_audit("audit.toml")          # runs the audit in a temporary directory
        assert result.verdict.value == "PASS", result.failed_gates_message

The fixture imports nothing heavy until it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def robaudit_audit(tmp_path: Path) -> Callable[..., Any]:
    """Return ``run(config_path, *, profile=None, out=None, baseline=None) -> AuditResult``.

    The outputs (results.json, report.html, junit.xml, summary.md) are written to ``out``
    (default: a fresh temporary directory). The result has ``failed_gates_message``.
    """

    def run(config_path: str | Path, *, profile: str | None = None, out: str | Path | None = None,
            baseline: str | Path | None = None) -> Any:
        from robaudit.config import load_config
        from robaudit.outputs import write_outputs
        from robaudit.results import AuditResult
        from robaudit.runner import AuditOptions, run_audit

        cfg = load_config(config_path, profile=profile)
        out_dir = Path(out) if out else tmp_path / "robaudit-out"
        base = AuditResult.read(baseline) if baseline else None
        result = run_audit(cfg, out_dir, AuditOptions(baseline=base))
        assert result is not None  # not sharded: this process is rank 0
        write_outputs(result, out_dir)
        failed = [g for g in result.gates if not g.passed]
        message = "; ".join(f"{g.model}/{g.variant} {g.name}: {g.message}" for g in failed) or "all gates passed"
        object.__setattr__(result, "failed_gates_message", message)
        return result

    return run
