"""APGD (Auto-PGD) with the CE or DLR loss, L-inf or L2: step-size-free PGD from AutoAttack."""

from __future__ import annotations

import enum

import torch
from robaudit.attacks.base import (
    Attack,
    Norm,
    as_module,
    ce_objective,
    check_positive_int,
    input_grad,
    l2_normalize,
    normal,
    project,
    run_restarts,
    success,
    uniform,
)
from torch import nn

from robaudit.errors import ParameterError
from robaudit.model import ModelAdapter

RHO = 0.75  #: oscillation threshold: halve the step if the loss rose in <= 75% of the last k steps
MOMENTUM = 0.75  #: weight of the new step (1 - MOMENTUM on the previous displacement)


class APGDLoss(str, enum.Enum):
    CE = "ce"
    DLR = "dlr"


def dlr_objective(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Difference of Logits Ratio (to maximise), shift- and scale-invariant in the logits.

    Untargeted: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``; targeted:
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (pi = logits sorted decreasingly).
    """
    needed = 3 if target is None else 4
    if logits.shape[1] < needed:
        raise ParameterError(
            f"the DLR loss needs at least {needed} classes, the model has {logits.shape[1]}; use loss='ce'"
        )
    zs, order = logits.sort(dim=1, descending=True)
    z_y = logits.gather(1, y[:, None])[:, 0]
    if target is None:
        top_is_y = (order[:, 0] == y).to(logits.dtype)
        z_other = zs[:, 1] * top_is_y + zs[:, 0] * (1.0 - top_is_y)
        return -(z_y - z_other) / (zs[:, 0] - zs[:, 2] + 1e-12)
    z_t = logits.gather(1, target[:, None])[:, 0]
    return -(z_y - z_t) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + 1e-12)


class APGD(Attack):
    """Auto-PGD: PGD with momentum and an automatic, per-sample step-size schedule.

    Threat model: ``||x_adv - x|| <= eps`` (L-inf or L2), ``x_adv`` in [0, 1], white box.

    Paper: Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble
    of diverse parameter-free attacks" (AutoAttack), ICML 2020; follows the official
    ``autopgd_base.py``. Step size starts at ``2 * eps``; iterate
    ``z = P(x_k + eta * s(grad))``, ``x_{k+1} = P(x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1}))``.
    Checkpoints: first after ``ceil(0.22 N)`` iterations, then every ``k`` iterations with ``k``
    shrinking by ``0.03 N`` down to ``0.06 N``. At a checkpoint a sample's step is halved (and
    it restarts from its best-loss point) if the loss rose in at most 75% of the last ``k``
    steps, or if the step was not halved at the previous checkpoint and the best loss has not
    improved since. The best-loss point is tracked per sample.

    Samples are dropped from the batch once fooled (their state does not influence other
    samples, so robust accuracy is unchanged; the first fooling iterate is returned).
    Restarts attack only still-robust samples. The oscillation test compares against the
    initial loss for the first window (the official code reads an unfilled zero row there).

    Args:
        norm: ``"linf"`` or ``"l2"``.
        eps: radius in pixel units.
        loss: ``"ce"`` (cross-entropy) or ``"dlr"`` (needs >= 3 classes, >= 4 if targeted).
        steps: iterations per restart (AutoAttack uses 100).
        restarts: random restarts (>= 1).

    Raises:
        ParameterError: eps < 0, steps < 1, restarts < 1, unknown norm or loss, too few classes.
    """

    def __init__(self, norm: str | Norm = "linf", eps: float = 8 / 255, loss: str | APGDLoss = "ce",
                 steps: int = 100, restarts: int = 1) -> None:
        super().__init__(norm, eps)
        try:
            self.loss = APGDLoss(str(loss.value if isinstance(loss, APGDLoss) else loss).lower())
        except ValueError:
            raise ParameterError(f"unknown APGD loss {loss!r}; use 'ce' or 'dlr'") from None
        self.steps = check_positive_int("steps", steps)
        self.restarts = check_positive_int("restarts", restarts)
        self.last_step_sizes = torch.zeros(0)

    def _objective(self, y: torch.Tensor, target: torch.Tensor | None):  # type: ignore[no-untyped-def]
        if self.loss is APGDLoss.CE:
            return lambda z: ce_objective(z, y, target)
        return lambda z: dlr_objective(z, y, target)

    def _perturb(self, model: nn.Module | ModelAdapter, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        if self.eps == 0.0:
            return x.clone()
        module = as_module(model)
        return run_restarts(x, y, target, self.restarts,
                            lambda xs, ys, ts, _r: self._run(module, xs, ys, ts, generator))

    def _start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.norm is Norm.LINF:
            t = 2.0 * uniform(tuple(x.shape), generator, x) - 1.0
            scale = t.reshape(len(x), -1).abs().amax(1).reshape(-1, *([1] * (x.dim() - 1)))
            return torch.clamp(x + self.eps * t / (scale + 1e-12), 0.0, 1.0)
        t = normal(tuple(x.shape), generator, x)
        return torch.clamp(x + self.eps * l2_normalize(t), 0.0, 1.0)

    def _step(self, xs: torch.Tensor, xa: torch.Tensor, x_old: torch.Tensor, grad: torch.Tensor,
              step: torch.Tensor, a: float) -> torch.Tensor:
        s = grad.sign() if self.norm is Norm.LINF else l2_normalize(grad)
        z = project(xs, xa + step.reshape(-1, *([1] * (xa.dim() - 1))) * s, self.norm, self.eps)
        z = xa + (z - xa) * a + (xa - x_old) * (1.0 - a)
        return project(xs, z, self.norm, self.eps)

    def _run(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n_iter = self.steps
        k = max(int(0.22 * n_iter), 1)
        k_min, k_decr = max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
        out = torch.empty_like(x)
        ok = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        ids = torch.arange(len(x), device=x.device)
        xa = self._start(x, generator)
        xs, ys, ts = x, y, target
        logits, loss, grad = input_grad(module, xa, self._objective(ys, ts))
        self._count(forward=len(xa), backward=len(xa))
        # per-sample state, compressed together when samples get fooled
        st = {"xs": xs, "ys": ys, "xa": xa, "x_old": xa.clone(), "grad": grad, "x_best": xa.clone(),
              "grad_best": grad.clone(), "loss_best": loss.clone(), "ids": ids,
              "step": torch.full((len(x),), 2.0 * self.eps, dtype=x.dtype, device=x.device),
              "loss_best_last": loss.clone(),
              "reduced_last": torch.ones(len(x), dtype=torch.bool, device=x.device)}
        if ts is not None:
            st["ts"] = ts
        hist = [loss]  # hist[j] = loss after iteration j - 1 (hist[0] = at the start point)
        st, hist = self._drop_fooled(st, hist, logits, out, ok)
        counter = 0
        for i in range(n_iter):
            if len(st["ids"]) == 0:
                break
            a = MOMENTUM if i > 0 else 1.0
            x_new = self._step(st["xs"], st["xa"], st["x_old"], st["grad"], st["step"], a)
            st["x_old"], st["xa"] = st["xa"], x_new
            logits, loss, grad = input_grad(module, x_new, self._objective(st["ys"], st.get("ts")))
            self._count(forward=len(x_new), backward=len(x_new))
            st["grad"] = grad
            hist.append(loss)
            improved = loss > st["loss_best"]
            st["x_best"][improved] = x_new[improved]
            st["grad_best"][improved] = grad[improved]
            st["loss_best"] = torch.where(improved, loss, st["loss_best"])
            counter += 1
            if counter == k:
                window = torch.stack(hist[-(k + 1):])
                rises = (window[1:] > window[:-1]).sum(0)
                oscillating = rises <= k * RHO
                stalled = (~st["reduced_last"]) & (st["loss_best_last"] >= st["loss_best"])
                reduce = oscillating | stalled
                st["reduced_last"] = reduce
                st["loss_best_last"] = st["loss_best"].clone()
                st["step"] = torch.where(reduce, st["step"] / 2.0, st["step"])
                st["xa"] = torch.where(reduce.reshape(-1, *([1] * (x.dim() - 1))), st["x_best"], st["xa"])
                st["grad"] = torch.where(reduce.reshape(-1, *([1] * (x.dim() - 1))), st["grad_best"], st["grad"])
                k = max(k - k_decr, k_min)
                counter = 0
            # the evaluated iterate x_new is what fooled the model, not a reset xa
            st["x_eval"] = x_new
            st, hist = self._drop_fooled(st, hist, logits, out, ok)
        if len(st["ids"]):
            out[st["ids"]] = st["x_best"]
        self.last_step_sizes = st["step"].clone()  # of the samples still robust after the last restart run
        return out, ok

    def _drop_fooled(self, st: dict[str, torch.Tensor], hist: list[torch.Tensor], logits: torch.Tensor,
                     out: torch.Tensor, ok: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        hit = success(logits, st["ys"], st.get("ts"))
        if not bool(hit.any()):
            return st, hist
        x_eval = st.get("x_eval", st["xa"])
        out[st["ids"][hit]] = x_eval[hit]
        ok[st["ids"][hit]] = True
        keep = ~hit
        return {name: t[keep] for name, t in st.items()}, [h[keep] for h in hist]
