"""robaudit: robustness and verification audits for trained image classifiers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from robaudit.model import ModelAdapter


def load_model(source: Any, **spec: Any) -> ModelAdapter:
    """Load a classifier as a ModelAdapter (see robaudit.loaders.load_model)."""
    from robaudit.loaders import load_model as _load

    return _load(source, **spec)


__all__ = ["__version__", "load_model"]
