"""S-shaped activations (Sigmoid, Tanh): auto_LiRPA's CROWN relaxation.

Both are convex for ``x < 0`` and concave for ``x > 0``. On ``[l, u]`` (auto_LiRPA
``BoundSigmoid/BoundTanh.bound_relax``):

* ``u <= 0`` (convex): upper = chord, lower = tangent at the midpoint;
* ``l >= 0`` (concave): lower = chord, upper = tangent at the midpoint;
* ``l < 0 < u``: lower = chord if ``f'(l) >= chord slope``, else the tangent at ``d <= 0``
  whose line passes through ``(u, f(u))``; upper = chord if ``f'(u) >= chord slope``, else
  the tangent at ``d >= 0`` through ``(l, f(l))``.

auto_LiRPA tabulates ``d`` on a 0.01 grid (rounded outward); here ``d`` is found by
bisection, keeping the end of the bracket whose tangent is valid, so it is sound and at
least as tight (within the 2% width tolerance the reference data allows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .base import ActivationOp

_BISECT_STEPS = 40


def _tangent_point(target: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor],
                   df: Callable[[torch.Tensor], torch.Tensor], side: float) -> torch.Tensor:
    """Tangent point ``d`` (``side * d <= 0``) whose tangent line bounds ``f`` up to ``target``.

    ``side = -1``: ``d <= 0`` with tangent(target) <= f(target) (lower line, target = u >= 0).
    ``side = +1``: ``d >= 0`` with tangent(target) >= f(target) (upper line, target = l <= 0).
    """
    ft = f(target)

    def valid(d: torch.Tensor) -> torch.Tensor:
        line = df(d) * (target - d) + f(d)
        return line <= ft if side < 0 else line >= ft

    far = torch.full_like(target, float(side))
    for _ in range(60):  # double until the tangent at ``far`` is valid
        ok = valid(far)
        if bool(ok.all()):
            break
        far = torch.where(ok, far, far * 2)
    near = torch.zeros_like(target)
    for _ in range(_BISECT_STEPS):
        mid = (far + near) / 2
        ok = valid(mid)
        far = torch.where(ok, mid, far)
        near = torch.where(ok, near, mid)
    return far


class SShapedOp(ActivationOp):
    def __init__(self, in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...], name: str) -> None:
        super().__init__(in_shapes, out_shape)
        self.label = name
        if name == "Sigmoid":
            self.f = torch.sigmoid
            self.df = lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x))
        elif name == "Tanh":
            self.f = torch.tanh
            self.df = lambda x: 1 - torch.tanh(x) ** 2
        else:  # pragma: no cover - constructed only by the converter
            raise ValueError(name)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.f(xs[0])

    def relax(self, lo: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f, df = self.f, self.df
        lo, u = lo.detach(), u.detach()
        fl, fu = f(lo), f(u)
        same = (u - lo) <= 1e-12
        chord_w = torch.where(same, df(lo), (fu - fl) / torch.where(same, torch.ones_like(u), u - lo))
        chord_b = fl - chord_w * lo
        mid = (lo + u) / 2
        tan_w = df(mid)
        tan_b = f(mid) - tan_w * mid
        neg, pos = u <= 0, lo >= 0
        both = ~(neg | pos)
        # lower line
        d_low = _tangent_point(torch.where(both, u, torch.ones_like(u)), f, df, -1.0)
        dl_w, dl_b = df(d_low), f(d_low) - df(d_low) * d_low
        low_chord_ok = both & (chord_w <= df(lo))
        low_w = torch.where(pos | low_chord_ok, chord_w, torch.where(neg, tan_w, dl_w))
        low_b = torch.where(pos | low_chord_ok, chord_b, torch.where(neg, tan_b, dl_b))
        # upper line
        d_up = _tangent_point(torch.where(both, lo, -torch.ones_like(lo)), f, df, 1.0)
        du_w, du_b = df(d_up), f(d_up) - df(d_up) * d_up
        up_chord_ok = both & (chord_w <= df(u))
        up_w = torch.where(neg | up_chord_ok, chord_w, torch.where(pos, tan_w, du_w))
        up_b = torch.where(neg | up_chord_ok, chord_b, torch.where(pos, tan_b, du_b))
        return low_w, low_b, up_w, up_b
