"""Optional backend: delegate ``compute_bounds`` to an installed auto_LiRPA.

Guarantee: the same as the native engine (sound bounds on ``C[b] @ module(x')`` for every ``x'``
in the eps-ball around ``x[b]``), as far as auto_LiRPA's own implementation is sound; robaudit's
arguments are translated exactly: for L-inf the pixel box ``[x_min, x_max]`` becomes auto_LiRPA's
``x_L = clamp(x - eps)``, ``x_U = clamp(x + eps)`` (auto_LiRPA then uses the box, not ``eps``);
without the box, and always for L2, only ``eps`` is given (L2 ignores the box, as natively).

Paper: Xu et al., "Automatic Perturbation Analysis for Scalable Certified Robustness and
Beyond", NeurIPS 2020 (auto_LiRPA, https://github.com/Verified-Intelligence/auto_LiRPA; API of
0.5/0.6: ``BoundedModule``, ``BoundedTensor``, ``PerturbationLpNorm``, ``compute_bounds``).

auto_LiRPA is not a dependency: it is imported lazily, inside the functions here. PyPI's 0.3
(2022) does not import on torch 2.x; a git install of a current version does.
"""

from __future__ import annotations

import copy
import importlib
import logging
import math
import weakref
from typing import Any

import torch
from torch import nn

from robaudit.errors import ParameterError

from .alpha_crown import AlphaOptions
from .compute import parse_norm, validate_inputs
from .errors import UnsupportedOperatorError
from .method import Method
from .perturbation import Perturbation

log = logging.getLogger(__name__)

INSTALL_HINT = ("install an auto_LiRPA that imports on this torch, e.g. "
                "pip install git+https://github.com/Verified-Intelligence/auto_LiRPA, or use backend='native'")

#: robaudit method -> the name auto_LiRPA's ``compute_bounds(method=...)`` expects.
METHOD_NAMES = {Method.IBP: "IBP", Method.CROWN: "CROWN", Method.CROWN_IBP: "CROWN-IBP",
                Method.ALPHA_CROWN: "alpha-CROWN"}

# auto_LiRPA ``optimize_bound_args`` keys passed through when given (else reset to these defaults,
# so that a cached BoundedModule never keeps a previous call's setting).
_PASSTHROUGH = {"fix_interm_bounds": True, "start_save_best": 0.5, "keep_best": True, "optimizer": "adam",
                "init_alpha": True}

# module -> (key, BoundedModule): one cached auto_LiRPA wrapper per network (see _bounded_module).
_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], tuple[Any, int]]] = weakref.WeakKeyDictionary()


class AutoLirpaUnavailableError(ParameterError):
    """``backend="auto_lirpa"`` was requested but auto_LiRPA is not importable here."""


def import_auto_lirpa() -> Any:
    """The auto_LiRPA module, or :class:`AutoLirpaUnavailableError` naming the fix."""
    try:
        mod = importlib.import_module("auto_LiRPA")
    except Exception as err:  # noqa: BLE001 - old versions fail on torch 2.x with any error type
        raise AutoLirpaUnavailableError(
            f"backend='auto_lirpa' needs auto_LiRPA, which does not import here (torch {torch.__version__}; "
            f"{type(err).__name__}: {err}); {INSTALL_HINT}") from err
    missing = [n for n in ("BoundedModule", "BoundedTensor", "PerturbationLpNorm") if not hasattr(mod, n)]
    if missing:
        raise AutoLirpaUnavailableError(
            f"the installed auto_LiRPA ({getattr(mod, '__version__', 'unknown version')}) lacks "
            f"{', '.join(missing)}; {INSTALL_HINT}")
    return mod


def auto_lirpa_available() -> bool:
    """True when an auto_LiRPA with the 0.5/0.6 API imports on this torch."""
    try:
        import_auto_lirpa()
    except AutoLirpaUnavailableError:
        return False
    return True


def auto_lirpa_version() -> str | None:
    """The installed auto_LiRPA's ``__version__`` (``"unknown"`` without one), None when unavailable."""
    try:
        return str(getattr(import_auto_lirpa(), "__version__", "unknown"))
    except AutoLirpaUnavailableError:
        return None


def optimize_bound_args(options: dict[str, Any] | None) -> dict[str, Any]:
    """robaudit alpha-CROWN options (our names or auto_LiRPA's) -> auto_LiRPA ``optimize_bound_args``.

    Validated like the native engine (:meth:`AlphaOptions.parse`); ``max_elements`` is native-only.
    """
    opts = AlphaOptions.parse(options)
    flat = dict(options or {})
    flat.update(flat.pop("optimize_bound_args", None) or {})
    args = {"iteration": opts.iterations, "lr_alpha": opts.lr, "lr_decay": opts.lr_decay,
            "early_stop_patience": opts.early_stop_patience}
    args.update({k: flat.get(k, default) for k, default in _PASSTHROUGH.items()})
    return args


def _fingerprint(module: nn.Module) -> tuple[Any, ...]:
    """Changes whenever a parameter or buffer is replaced or modified in place."""
    return tuple((name, t.data_ptr(), t._version, t.dtype, tuple(t.shape))
                 for name, t in [*module.named_parameters(), *module.named_buffers()])


def _bounded_module(lirpa: Any, module: nn.Module, x: torch.Tensor) -> tuple[Any, int]:
    """A cached ``BoundedModule`` wrapping a frozen copy of ``module`` (in ``x``'s dtype and device),
    and the number of outputs.

    Building one traces the network, so it is reused while the weights, input shape, dtype and
    device stay the same. The copy keeps auto_LiRPA from touching the caller's module (device moves,
    gradients of the alpha optimisation).
    """
    key = (_fingerprint(module), tuple(x.shape[1:]), x.dtype, x.device)
    hit = _CACHE.get(module)
    if hit is not None and hit[0] == key:
        return hit[1]
    log.debug("auto_LiRPA: wrapping %s for inputs %s (%s)", type(module).__name__, tuple(x.shape[1:]), x.dtype)
    frozen = copy.deepcopy(module).to(device=x.device, dtype=x.dtype)
    frozen.requires_grad_(False)
    with torch.no_grad():
        n_out = int(frozen(x[:1]).shape[-1])
    try:
        bounded = lirpa.BoundedModule(frozen, torch.zeros_like(x[:1]), device=x.device)
    except Exception as err:  # noqa: BLE001 - auto_LiRPA reports unsupported graphs with many error types
        raise UnsupportedOperatorError(f"auto_LiRPA cannot convert {type(module).__name__} "
                                       f"({type(err).__name__}: {err})") from err
    _CACHE[module] = (key, (bounded, n_out))
    return bounded, n_out


def compute_bounds_auto_lirpa(module: nn.Module, x: torch.Tensor, eps: float, *, norm: float | str = math.inf,
                              method: str | Method = "crown", C: torch.Tensor | None = None,
                              x_min: float | None = 0.0, x_max: float | None = 1.0,
                              options: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`robaudit.certify.lirpa.compute_bounds` computed by auto_LiRPA (same arguments and result).

    Args:
        module: eval-mode network mapping ``x`` to logits ``(B, K)``, convertible by auto_LiRPA.
        x: the centres, ``(B, *input_shape)``; the bound is computed in ``x.dtype``.
        eps: the radius (pixel units).
        norm: ``inf`` or ``2``.
        method: ``ibp``, ``crown``, ``crown-ibp`` or ``alpha-crown`` (auto_LiRPA's spellings accepted),
            sent as ``IBP``, ``CROWN``, ``CROWN-IBP``, ``alpha-CROWN``.
        C: spec matrix ``(B, S, K)``; None bounds the logits (an identity spec is sent).
        x_min, x_max: the valid pixel range (L-inf only; None for both disables it).
        options: alpha-CROWN settings as for the native engine, mapped by :func:`optimize_bound_args`
            (``max_elements`` is native-only and ignored here).

    Returns:
        ``(lb, ub)``, each ``(B, S)`` (``(B, K)`` without ``C``), detached.

    Raises:
        AutoLirpaUnavailableError: auto_LiRPA does not import here (a :class:`ParameterError`).
        UnsupportedOperatorError: the module is in training mode, or auto_LiRPA cannot convert it.
        ParameterError: invalid eps, norm, method, C or options.
        RuntimeError: auto_LiRPA returned bounds of the wrong shape.
    """
    m = Method.parse(method)
    p = parse_norm(norm)
    x, eps = validate_inputs(x, eps)
    ptb = Perturbation(x, eps, p, x_min, x_max)
    bound_args = optimize_bound_args(options)  # validated for every method, as natively
    lirpa = import_auto_lirpa()
    if any(sub.training for sub in module.modules()):
        raise UnsupportedOperatorError(f"{type(module).__name__} is in training mode; call module.eval() before "
                                       "bounding it (BatchNorm and Dropout must use their inference behaviour)")
    bounded, n_out = _bounded_module(lirpa, module, x)
    from robaudit.certify.lirpa.compute import spec_matrix

    spec = spec_matrix(C, x, n_out)
    if ptb.is_linf and x_min is not None:
        x_L, x_U = ptb.box()
        perturbation = lirpa.PerturbationLpNorm(eps=eps, norm=math.inf, x_L=x_L, x_U=x_U)
    else:
        perturbation = lirpa.PerturbationLpNorm(eps=eps, norm=math.inf if ptb.is_linf else 2.0)
    bt = lirpa.BoundedTensor(x, perturbation)
    if m is Method.ALPHA_CROWN:
        bounded.set_bound_opts({"optimize_bound_args": bound_args})
    with torch.set_grad_enabled(m is Method.ALPHA_CROWN):
        lb, ub = bounded.compute_bounds(x=(bt,), method=METHOD_NAMES[m], C=spec, bound_lower=True, bound_upper=True)
    expected = (x.shape[0], spec.shape[1])
    for name, bound in (("lower", lb), ("upper", ub)):
        if not isinstance(bound, torch.Tensor) or tuple(bound.shape) != expected:
            got = tuple(bound.shape) if isinstance(bound, torch.Tensor) else type(bound).__name__
            raise RuntimeError(f"auto_LiRPA returned a {name} bound of shape {got}, expected {expected}")
    return lb.detach().to(x.dtype), ub.detach().to(x.dtype)
