"""The Stage contract: one audit method, run over work units of samples.

A stage is a pure function of (model, data, params, seed). The runner splits the
audited samples into work units of ``unit_size`` samples (fixed chunks of the
ordered sample ids), calls :meth:`Stage.run_unit` on each with a generator seeded
from ``derive_seed(root, model, variant, stage id, unit key)``, commits every unit
to the run store as soon as it is done (so ``--resume`` and sharding work), and
finally calls :meth:`Stage.summarize` on the per-sample arrays of all units.

Stages never write files, print, or render HTML.
"""

from __future__ import annotations

import dataclasses
import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from robaudit.data import Batch, Dataset
from robaudit.model import Capability, ModelAdapter


class StageKind(str, enum.Enum):
    ACCURACY = "accuracy"
    ATTACK = "attack"
    CORRUPTION = "corruption"
    PATCH = "patch"
    ATTENTION = "attention"
    CERTIFY = "certify"
    EXPLAIN = "explain"


@dataclass(frozen=True)
class UnitOutput:
    """What one work unit produced.

    ``arrays`` hold per-sample results (first axis = samples of the unit, in order)
    unless the stage runs as a single unit. ``counters`` are additive totals
    (forward/backward passes, queries) summed over units.
    """

    arrays: dict[str, np.ndarray]
    counters: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StageOutput:
    """What a stage reports: metrics (dotted names -> float), figures, notes, budget."""

    metrics: dict[str, float]
    figures: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)


class Skip(Exception):
    """Raised by :meth:`Stage.check` (or run_unit) when the stage does not apply; the message is the reason."""


class Stage(ABC):
    """Base class of every audit stage.

    Subclasses set ``name`` (the registry / config key), ``kind``, ``requires``,
    ``Params`` (a frozen dataclass with defaults) and optionally ``profiles``
    (profile name -> parameter overrides) and ``unit_size`` (None = one unit
    holding the whole data set, for methods that need all samples at once).
    """

    name: ClassVar[str]
    kind: ClassVar[StageKind]
    requires: ClassVar[frozenset[Capability]] = frozenset()
    Params: ClassVar[type]
    profiles: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    unit_size: ClassVar[int | None] = 64
    description: ClassVar[str] = ""
    metric_docs: ClassVar[Mapping[str, str]] = {}

    def __init__(self, params: Any) -> None:
        self.params = params

    def check(self, model: ModelAdapter, data: Dataset) -> None:
        """Raise :class:`Skip` with a reason if the stage does not apply to this model/data.

        Invalid parameters should raise robaudit.errors.ParameterError in ``Params.__post_init__``.
        """
        return None

    @abstractmethod
    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        """Process one work unit of samples."""

    @abstractmethod
    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        """Aggregate the per-sample arrays of all units (concatenated in sample order)."""

    def params_json(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self.params))


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
