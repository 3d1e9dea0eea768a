"""Declarative release gates: thresholds and baseline regressions on metrics.

A metric that is missing, non-finite, or comes from an ERROR/SKIPPED stage never passes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence

from robaudit.config import GateConfig, Severity
from robaudit.results import AuditResult, GateResult, StageResult, StageStatus, Verdict

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq,
}


def evaluate_gates(
    gates: Sequence[GateConfig],
    stages: Sequence[StageResult],
    models: Sequence[str],
    baseline: AuditResult | None = None,
) -> list[GateResult]:
    """One GateResult per (gate, model) pair the gate applies to."""
    by_key = {(s.model, s.variant, s.id): s for s in stages}
    results = []
    for gate in gates:
        stage_id, metric = gate.metric.split(".", 1)
        for model in [gate.model] if gate.model else list(models):
            stage = by_key.get((model, gate.variant, stage_id))
            value, problem = _lookup(stage, metric, f"{model}/{gate.variant}/{stage_id}")
            base_value = None
            if baseline is not None:
                base_stage = baseline.stage(model, gate.variant, stage_id)
                base_value, _ = _lookup(base_stage, metric, "")
            results.append(_judge(gate, model, value, problem, base_value, baseline is not None))
    return results


def _lookup(stage: StageResult | None, metric: str, where: str) -> tuple[float | None, str]:
    if stage is None:
        return None, f"stage {where} was not run"
    if stage.status is not StageStatus.OK:
        reason = stage.error or "; ".join(stage.notes) or ""
        return None, f"stage {where} is {stage.status.value}{': ' + reason.splitlines()[0] if reason else ''}"
    if metric not in stage.metrics:
        return None, f"metric {metric!r} not produced by {where}"
    value = stage.metrics[metric]
    if value is None or not math.isfinite(value):
        return None, f"metric {metric!r} of {where} is not a finite number ({value})"
    return float(value), ""


def _judge(gate: GateConfig, model: str, value: float | None, problem: str,
           base_value: float | None, have_baseline: bool) -> GateResult:
    def result(passed: bool, message: str) -> GateResult:
        return GateResult(
            name=gate.label, metric=gate.metric, op=gate.op,
            threshold=float(gate.threshold) if gate.threshold is not None else float("nan"),
            model=model, variant=gate.variant, severity=gate.severity.value, passed=passed,
            value=value, message=message, baseline_value=base_value,
        )

    if value is None:
        return result(False, problem)
    messages = []
    passed = True
    if gate.threshold is not None:
        ok = OPERATORS[gate.op](value, gate.threshold)
        passed &= ok
        messages.append(f"{value:.4g} {gate.op} {gate.threshold:g}" + ("" if ok else " is false"))
    if gate.max_drop is not None:
        if not have_baseline:
            passed = False
            messages.append("max_drop needs a baseline results.json (--baseline OLD.json)")
        elif base_value is None:
            passed = False
            messages.append("the baseline has no valid value for this metric")
        else:
            worse = regression(gate.op, base_value, value)
            ok = worse <= gate.max_drop + 1e-12
            passed &= ok
            messages.append(f"regression {worse:+.4g} vs baseline {base_value:.4g} (max {gate.max_drop:g})")
    return result(passed, "; ".join(messages))


def regression(op: str, old: float, new: float) -> float:
    """How much worse ``new`` is than ``old`` given the gate direction (positive = worse)."""
    if op in ("<=", "<"):
        return new - old
    if op == "==":
        return abs(new - old)
    return old - new


def verdict_of(gates: Sequence[GateResult], stages: Sequence[StageResult]) -> tuple[Verdict, int]:
    """Verdict and exit code: an ERROR stage -> 3; a failed fail-gate -> 1; else 0."""
    from robaudit.errors import ExitCode

    if any(s.status is StageStatus.ERROR for s in stages):
        return Verdict.ERROR, int(ExitCode.AUDIT_FAILED)
    if any(not g.passed and g.severity == Severity.FAIL.value for g in gates):
        return Verdict.FAIL, int(ExitCode.GATE_FAILED)
    if any(not g.passed for g in gates):
        return Verdict.WARN, int(ExitCode.OK)
    return Verdict.PASS, int(ExitCode.OK)
