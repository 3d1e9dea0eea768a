"""Square Attack: score-based black-box random search with square-shaped updates (L-inf, L2)."""

from __future__ import annotations

import math

import torch
from robaudit.attacks.base import Attack, Norm, check_positive_int, l2_normalize, logits_fn, margin, uniform
from torch import nn

from robaudit.errors import ParameterError
from robaudit.model import ModelAdapter

#: p_init is divided by 2, 4, ..., 512 after these fractions (x 1/10000) of the query budget
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
             (8000, 256), (10000, 512))


def p_selection(p_init: float, it: int, n_queries: int) -> float:
    """Fraction of pixels changed at iteration ``it`` (the official piecewise schedule)."""
    it = int(it / n_queries * 10000)
    for bound, div in _SCHEDULE:
        if it <= bound:
            return p_init / div
    return p_init


def _eta(h: int, w: int) -> torch.Tensor:
    """Concentric rectangles with weights 1 / (r + 1)^2 (the official ``eta_rectangles``)."""
    delta = torch.zeros(h, w)
    xc, yc = h // 2 + 1, w // 2 + 1
    c0, c1 = xc - 1, yc - 1
    for r in range(max(xc, yc)):
        delta[max(c0, 0):min(c0 + 2 * r + 1, h), max(c1, 0):min(c1 + 2 * r + 1, w)] += 1.0 / (r + 1) ** 2
        c0, c1 = c0 - 1, c1 - 1
    return delta / delta.pow(2).sum().sqrt()


def _pseudo_gaussian(s: int, generator: torch.Generator) -> torch.Tensor:
    """Two opposite-signed eta blocks stacked (randomly transposed), unit L2 norm."""
    delta = torch.zeros(s, s)
    delta[: s // 2] = _eta(s // 2, s)
    delta[s // 2:] = -_eta(s - s // 2, s)
    delta = delta / delta.pow(2).sum().sqrt()
    if float(torch.rand((), generator=generator, device=generator.device)) > 0.5:
        delta = delta.t()
    return delta


class Square(Attack):
    """Square Attack: random search that needs only the model's output scores.

    Threat model: ``||x_adv - x|| <= eps`` (L-inf or L2), ``x_adv`` in [0, 1]; black box
    (score-based): only ``logits`` under ``torch.no_grad`` are queried, so it runs on ONNX
    adapters too. Each sample stops once fooled; ``last_queries`` records queries per sample
    (the initial point counts as one query).

    Paper: Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient
    black-box adversarial attack via random search", ECCV 2020; follows the official /
    AutoAttack implementation. Margin loss; L-inf: vertical-stripe init and squares of
    side ``s = sqrt(p * H * W)`` set to +-2 eps per channel; L2: pseudo-Gaussian block
    init and mass-moving square updates. ``p`` follows the piecewise schedule from
    ``p_init``. One window position per iteration is shared by the batch (as in the
    official code); signs are drawn per sample.

    Args:
        norm: ``"linf"`` or ``"l2"``.
        eps: radius in pixel units.
        queries: query budget per sample (>= 1; the paper uses 10000, AutoAttack 5000).
        p_init: initial fraction of pixels changed, in (0, 1] (AutoAttack: 0.8).

    Raises:
        ParameterError: eps < 0, queries < 1, p_init outside (0, 1], unknown norm.
    """

    def __init__(self, norm: str | Norm = "linf", eps: float = 8 / 255, queries: int = 1000,
                 p_init: float = 0.8) -> None:
        super().__init__(norm, eps)
        self.queries = check_positive_int("queries", queries)
        if not 0.0 < float(p_init) <= 1.0:
            raise ParameterError(f"p_init must be in (0, 1], got {p_init}; AutoAttack uses 0.8")
        self.p_init = float(p_init)
        self.last_queries = torch.zeros(0, dtype=torch.long)

    def _perturb(self, model: nn.Module | ModelAdapter, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        self.last_queries = torch.zeros(len(x), dtype=torch.long)
        if self.eps == 0.0:
            return x.clone()
        f = logits_fn(model)
        _, c, h, w = x.shape

        def query(xq: torch.Tensor, yq: torch.Tensor, tq: torch.Tensor | None) -> torch.Tensor:
            with torch.no_grad():
                z = f(xq).float()
            self._count(forward=len(xq))
            return margin(z, yq, tq)

        if self.norm is Norm.LINF:
            signs = torch.where(uniform((len(x), c, 1, w), generator, x) < 0.5, -1.0, 1.0).to(x.dtype)
            x_best = torch.clamp(x + self.eps * signs, 0.0, 1.0)
        else:
            x_best = self._l2_init(x, generator)
        m_best = query(x_best, y, target)
        n_q = torch.ones(len(x), dtype=torch.long)
        for i in range(self.queries - 1):
            act = (m_best > 0).nonzero()[:, 0]
            if len(act) == 0:
                break
            xc, xb = x[act], x_best[act]
            p = p_selection(self.p_init, i, self.queries)
            if self.norm is Norm.LINF:
                x_new = self._linf_candidate(xc, xb, p, generator)
            else:
                x_new = self._l2_candidate(xc, xb, p, generator)
            m_new = query(x_new, y[act], target[act] if target is not None else None)
            better = m_new < m_best[act]
            m_best[act] = torch.where(better, m_new, m_best[act])
            x_best[act] = torch.where(better.reshape(-1, 1, 1, 1), x_new, xb)
            n_q[act.cpu()] += 1
        self.last_queries = n_q
        return x_best

    def _window(self, s: int, h: int, w: int, generator: torch.Generator) -> tuple[int, int]:
        vh = int(torch.randint(0, h - s + 1, (), generator=generator, device=generator.device))
        vw = int(torch.randint(0, w - s + 1, (), generator=generator, device=generator.device))
        return vh, vw

    def _linf_candidate(self, xc: torch.Tensor, xb: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = xc.shape
        s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
        vh, vw = self._window(s, h, w, generator)
        signs = torch.where(uniform((n, c, 1, 1), generator, xc) < 0.5, -1.0, 1.0).to(xc.dtype)
        x_new = xb.clone()
        x_new[:, :, vh:vh + s, vw:vw + s] += 2.0 * self.eps * signs
        x_new = torch.minimum(torch.maximum(x_new, xc - self.eps), xc + self.eps)
        return torch.clamp(x_new, 0.0, 1.0)

    def _l2_init(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        delta = torch.zeros_like(x)
        s = max(h // 5, 1)
        start = (h - s * 5) // 2 if h >= 5 else 0
        vh = start
        for _ in range(h // s):
            vw = start
            for _ in range(w // s):
                if vh + s <= h and vw + s <= w:
                    signs = torch.where(uniform((n, c, 1, 1), generator, x) < 0.5, -1.0, 1.0).to(x.dtype)
                    delta[:, :, vh:vh + s, vw:vw + s] += _pseudo_gaussian(s, generator).to(x) * signs
                vw += s
            vh += s
        return torch.clamp(x + self.eps * l2_normalize(delta), 0.0, 1.0)

    def _l2_candidate(self, xc: torch.Tensor, xb: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = xc.shape
        eps = self.eps
        delta = xb - xc
        s = max(int(round(math.sqrt(p * h * w))), 3)
        if s % 2 == 0:
            s += 1
        s = min(s, h, w)
        vh, vw = self._window(s, h, w, generator)
        vh2, vw2 = self._window(s, h, w, generator)
        win1 = delta[:, :, vh:vh + s, vw:vw + s]
        norm_win1 = win1.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
        mask = torch.zeros_like(xc)
        mask[:, :, vh:vh + s, vw:vw + s] = 1.0
        mask[:, :, vh2:vh2 + s, vw2:vw2 + s] = 1.0
        norm_img = delta.reshape(n, -1).norm(dim=1).reshape(n, 1, 1, 1)
        norm_windows = (delta * mask).reshape(n, -1).norm(dim=1).reshape(n, 1, 1, 1)
        signs = torch.where(uniform((n, c, 1, 1), generator, xc) < 0.5, -1.0, 1.0).to(xc.dtype)
        new = _pseudo_gaussian(s, generator).to(xc).reshape(1, 1, s, s) * signs
        new = new + win1 / (norm_win1 + 1e-12)
        budget = (torch.clamp(eps ** 2 - norm_img ** 2, min=0.0) / c + norm_windows ** 2).sqrt()
        new = new / (new.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt() + 1e-12) * budget
        delta = delta.clone()
        delta[:, :, vh2:vh2 + s, vw2:vw2 + s] = 0.0
        delta[:, :, vh:vh + s, vw:vw + s] = new
        return torch.clamp(xc + eps * l2_normalize(delta), 0.0, 1.0)
