"""robaudit's native LiRPA engine: IBP, CROWN, CROWN-IBP and alpha-CROWN bounds.

``compute_bounds(module, x, eps, norm=..., method=..., C=...) -> (lb, ub)``; networks are
traced with torch.fx into a small op graph (see :mod:`.graph` for the supported operators).
"""

from __future__ import annotations

from .compute import compute_bounds, parse_norm
from .errors import UnsupportedOperatorError
from .graph import Graph, trace
from .method import Method

__all__ = ["compute_bounds", "parse_norm", "Method", "UnsupportedOperatorError", "Graph", "trace"]
