"""Causal attribution by interventions on hidden units: node effects, path effects, causal graph, maps.

Guarantee: every number is an exact interventional quantity of the given network on the
given images (no sampling): ACE_{l,c}(y) = mean_x [f_y(x) - f_y(x | do(a_{l,c} := b_{l,c}))],
f = logit (default) or softmax probability. Forward hooks are always removed (try/finally),
so the model is unchanged afterwards.

Paper: Ahmad, Bereux, Baret, Hashemi, Lecue, "Causal Analysis for Robust Interpretability of
Neural Networks" (arXiv 2305.08950). No official code and no full text were available:
everything here is robaudit's operationalisation of METHODS §7.2 [robaudit choice]:

* A "channel" is dim 1 of a conv output (N, C, H, W) or the hidden dim of a token output
  (N, T, D) (e.g. a timm ViT ``blocks.N.mlp``); for (N, D) outputs, dim 1.
* Baseline ``"mean"``: the channel's mean activation over the images x, kept per spatial
  position / token (mean over samples only); ``"zero"`` (or ``"0"``): 0; or an explicit
  tensor shaped like one sample's activation (the stage passes the mean over ALL audited
  clean-correct images, so class-y effects are not measured against a class-y prototype).
* Interventions are batched: the batch is replicated once per intervened channel (group)
  and one hooked forward overwrites each replica's channel(s).
* Path effect PE(u -> v -> y): run do(a_u := b_u) up to layer l', take the modified value of
  channel v only, keep every other channel of l' at its clean value, finish the forward.
* Explanation map: E(x) = ReLU(sum_c w_c upsample(a_{l,c}(x))) (bilinear to the input size;
  ViT tokens: prefix tokens dropped, patch tokens reshaped to their grid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.errors import ParameterError

BASELINES = ("mean", "zero", "0")
SPACES = ("logit", "prob")


class _Stop(Exception):
    """Raised by a recording hook to skip the rest of a forward pass."""


def resolve_layer(module: nn.Module, layer: nn.Module | str) -> nn.Module:
    """The sub-module ``layer`` (a module, or a dotted name; ``net.`` is tried as a prefix too)."""
    if isinstance(layer, nn.Module):
        return layer
    names = dict(module.named_modules())
    for name in (layer, f"net.{layer}"):
        if name in names:
            return names[name]
    raise ParameterError(f"layer {layer!r} is not a sub-module; use one of the dotted names of "
                         f"module.named_modules(), e.g. {[n for n in names if n][-3:]}")


def channel_dim(act: torch.Tensor) -> int:
    """Channel axis: 1 for (N, C, H, W) and (N, D); 2 for token outputs (N, T, D)."""
    if act.dim() == 3:
        return 2
    if act.dim() in (2, 4):
        return 1
    raise ParameterError(f"cannot intervene on an activation of shape {tuple(act.shape)} (need 2, 3 or 4 dims)")


def _run(module: nn.Module, x: torch.Tensor, hooks: Sequence[tuple[nn.Module, object]]) -> torch.Tensor | None:
    handles = [m.register_forward_hook(h) for m, h in hooks]  # type: ignore[arg-type]
    try:
        with torch.no_grad():
            return module(x)
    except _Stop:
        return None
    finally:
        for h in handles:
            h.remove()


def activation(module: nn.Module, layer: nn.Module | str, x: torch.Tensor) -> torch.Tensor:
    """The output of ``layer`` on ``x`` (no gradients; the forward stops at the layer)."""
    target = resolve_layer(module, layer)
    box: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        box.append(out.detach())
        raise _Stop

    _run(module, x, [(target, hook)])
    if not box:
        raise ParameterError(f"layer {layer!r} did not run in the forward pass")
    return box[0]


def baseline_value(act: torch.Tensor, baseline: str | torch.Tensor) -> torch.Tensor:
    """Per-channel baseline shaped like one sample's activation (a tensor is used as given)."""
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != act.shape[1:]:
            raise ParameterError(f"an explicit baseline must have one sample's activation shape "
                                 f"{tuple(act.shape[1:])}, got {tuple(baseline.shape)}")
        return baseline.to(act.device, act.dtype)
    if baseline not in BASELINES:
        raise ParameterError(f"baseline must be one of {list(BASELINES)}, got {baseline!r}")
    return act.mean(0) if baseline == "mean" else torch.zeros_like(act[0])


def _score(logits: torch.Tensor, y: torch.Tensor, space: str) -> torch.Tensor:
    vals = F.softmax(logits, dim=1) if space == "prob" else logits
    return vals.gather(1, y.view(-1, 1)).squeeze(1)


def _labels(y: torch.Tensor | int, n: int, device: torch.device) -> torch.Tensor:
    if isinstance(y, int):
        return torch.full((n,), y, dtype=torch.long, device=device)
    y = y.to(device).long().reshape(-1)
    if len(y) != n:
        raise ParameterError(f"y must hold one label per image ({n}), got {len(y)}")
    return y


def _mask_shape(act_shape: torch.Size, dim: int) -> list[int]:
    shape = [1] * (len(act_shape) - 1)
    shape[dim - 1] = act_shape[dim]
    return shape


def intervened_logits(module: nn.Module, layer: nn.Module | str, x: torch.Tensor, masks: torch.Tensor,
                      value: torch.Tensor, *, max_batch: int = 256) -> torch.Tensor:
    """Logits under do(a_{l,c} := value_c for c in masks[g]) for each group g: shape (G, N, classes).

    Each group g is one replica of the batch; ``masks`` (G, C) bool chooses the channels set
    to ``value`` (shaped like one sample's activation) in that replica, many replicas per forward.
    Shared prefix: the layers before ``layer`` run once on the N images and the hook returns
    the G replicas; this is used only after the first group gave the same logits as fully
    replicated inputs (else, e.g. with residual connections around ``layer``, every group
    replicates the input).
    """
    target = resolve_layer(module, layer)
    n = len(x)
    per = max(1, max_batch // max(n, 1))
    probe = masks[:2]  # two replicas (one would hide batch mismatches): shared prefix vs replicated input
    full = _group_logits(module, target, x, probe, value, shared=False)
    try:
        fast = _group_logits(module, target, x, probe, value, shared=True)
        shared = fast.shape == full.shape and bool(torch.allclose(fast, full, rtol=1e-4, atol=1e-5))
    except RuntimeError:
        shared = False
    out = [full]
    for g0 in range(len(probe), len(masks), per):
        out.append(_group_logits(module, target, x, masks[g0 : g0 + per], value, shared=shared))
    return torch.cat(out)


def _group_logits(module: nn.Module, target: nn.Module, x: torch.Tensor, gm: torch.Tensor, value: torch.Tensor,
                  *, shared: bool) -> torch.Tensor:
    n, reps = len(x), len(gm)

    def hook(_m: nn.Module, _i: object, o: torch.Tensor) -> torch.Tensor:
        d = channel_dim(o)
        if shared:
            ov = o.unsqueeze(0).expand(reps, *o.shape).clone()
        else:
            ov = o.reshape(reps, n, *o.shape[1:]).clone()
        val = value.to(o.dtype)
        for g, chans in enumerate(gm.tolist()):
            idx = torch.tensor([c for c, on in enumerate(chans) if on], dtype=torch.long, device=o.device)
            if len(idx):
                ov[g].index_copy_(d, idx, val.index_select(d - 1, idx).unsqueeze(0).expand(
                    n, *[-1] * val.dim()).contiguous())
        return ov.reshape(reps * n, *ov.shape[2:])

    inp = x if shared else x.repeat(reps, *[1] * (x.dim() - 1))
    logits = _run(module, inp, [(target, hook)])
    assert logits is not None
    return logits.reshape(reps, n, -1)


def intervened_scores(module: nn.Module, layer: nn.Module | str, x: torch.Tensor, y: torch.Tensor | int,
                      masks: torch.Tensor, value: torch.Tensor, *, space: str = "logit",
                      max_batch: int = 256) -> torch.Tensor:
    """f_y under the interventions of :func:`intervened_logits`: shape (G, N)."""
    if space not in SPACES:
        raise ParameterError(f"space must be one of {list(SPACES)}, got {space!r}")
    logits = intervened_logits(module, layer, x, masks, value, max_batch=max_batch)
    g, n = logits.shape[:2]
    yy = _labels(y, n, x.device).repeat(g)
    return _score(logits.reshape(g * n, -1), yy, space).reshape(g, n)


def clean_scores(module: nn.Module, x: torch.Tensor, y: torch.Tensor | int, space: str = "logit") -> torch.Tensor:
    with torch.no_grad():
        return _score(module(x), _labels(y, len(x), x.device), space)


def channel_effects(module: nn.Module, layer: nn.Module | str, x: torch.Tensor, y: torch.Tensor | int, *,
                    baseline: str | torch.Tensor = "mean", space: str = "logit", max_batch: int = 256) -> torch.Tensor:
    """Average causal effect of each channel of ``layer`` on class-y scores: Tensor[C].

    Args:
        module: the network (eval mode); taking the images x as they are given.
        layer: a sub-module or its dotted name in ``module``.
        x: images (N, ...). y: the class (int) or per-image classes (N,).
        baseline: ``"mean"`` (channel mean over x), ``"zero"``/``"0"``, or a tensor shaped like
            one sample's activation of ``layer``.
        space: ``"logit"`` (default) or ``"prob"``.
        max_batch: images per hooked forward (channels are grouped to fill it).

    Returns:
        ACE_c = mean_x [f_y(x) - f_y(x | do(a_c := b_c))] for every channel c.

    Raises:
        ParameterError: unknown layer, baseline or space; wrong label count.
    """
    act = activation(module, layer, x)
    b = baseline_value(act, baseline)
    c = act.shape[channel_dim(act)]
    masks = torch.eye(c, dtype=torch.bool)
    inter = intervened_scores(module, layer, x, y, masks, b, space=space, max_batch=max_batch)
    return (clean_scores(module, x, y, space).unsqueeze(0) - inter).mean(1)


def path_effects(module: nn.Module, layer_from: nn.Module | str, layer_to: nn.Module | str, x: torch.Tensor,
                 y: torch.Tensor | int, sources: Sequence[int], targets: Sequence[int], *, baseline: str | torch.Tensor = "mean",
                 space: str = "logit", max_batch: int = 256) -> torch.Tensor:
    """Path-specific effects PE(u -> v -> y) for u in ``sources`` (layer_from), v in ``targets`` (layer_to).

    Returns:
        Tensor (len(sources), len(targets)): mean_x [f_y(x) - f_y(x | a_v := a_v under do(a_u := b_u))].
    """
    src = resolve_layer(module, layer_from)
    dst = resolve_layer(module, layer_to)
    n = len(x)
    act = activation(module, src, x)
    b = baseline_value(act, baseline)
    c_from = act.shape[channel_dim(act)]
    clean = clean_scores(module, x, y, space)
    out = torch.zeros(len(sources), len(targets))
    for i, u in enumerate(sources):
        mask = torch.zeros(1, c_from, dtype=torch.bool)
        mask[0, u] = True
        box: list[torch.Tensor] = []

        def intervene(_m: nn.Module, _i: object, o: torch.Tensor, mask: torch.Tensor = mask) -> torch.Tensor:
            m = mask.to(o.device).view(1, *_mask_shape(o.shape, channel_dim(o)))
            return torch.where(m, b.to(o.dtype).unsqueeze(0), o)

        def record(_m: nn.Module, _i: object, o: torch.Tensor, box: list[torch.Tensor] = box) -> None:
            box.append(o.detach())
            raise _Stop

        _run(module, x, [(src, intervene), (dst, record)])
        if not box:
            raise ParameterError(f"layer {layer_to!r} did not run after {layer_from!r}")
        modified = box[0]
        d = channel_dim(modified)
        c_to = modified.shape[d]
        per = max(1, max_batch // max(n, 1))
        for j0 in range(0, len(targets), per):
            tv = list(targets[j0 : j0 + per])
            reps = len(tv)
            tm = torch.zeros(reps, c_to, dtype=torch.bool)
            tm[torch.arange(reps), torch.tensor(tv)] = True

            def splice(_m: nn.Module, _i: object, o: torch.Tensor, tm: torch.Tensor = tm, reps: int = reps,
                       modified: torch.Tensor = modified) -> torch.Tensor:
                ov = o.reshape(reps, n, *o.shape[1:])
                m = tm.to(o.device).view(reps, 1, *_mask_shape(o.shape, channel_dim(o)))
                return torch.where(m, modified.unsqueeze(0), ov).reshape(o.shape)

            logits = _run(module, x.repeat(reps, *[1] * (x.dim() - 1)), [(dst, splice)])
            assert logits is not None
            scores = _score(logits, _labels(y, n, x.device).repeat(reps), space).reshape(reps, n)
            out[i, j0 : j0 + reps] = (clean.unsqueeze(0) - scores).mean(1).cpu()
    return out


def _token_grid(act: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
    """(N, T, D) token activations -> (N, D, h, w) on the patch grid (prefix tokens dropped)."""
    n, t, dd = act.shape
    if grid is None:
        side = math.isqrt(t)
        grid = (side, side)
    h, w = grid
    if h * w > t:
        raise ParameterError(f"{t} tokens cannot hold a {h}x{w} patch grid")
    return act[:, t - h * w :].transpose(1, 2).reshape(n, dd, h, w)


def explanation_map(module: nn.Module, layer: nn.Module | str, x: torch.Tensor, weights: torch.Tensor, *,
                    relu: bool = True, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """E(x) = ReLU(sum_c w_c upsample(a_{l,c}(x))): maps (N, H, W) at the input resolution.

    Args:
        weights: (C,) shared by all images or (N, C) per image (e.g. per predicted class).
        relu: apply the ReLU (False gives the signed map).
        grid: the ViT patch grid (default: the largest square of trailing tokens).
    """
    act = activation(module, layer, x)
    if act.dim() == 3:
        act = _token_grid(act, grid)
    if act.dim() != 4:
        raise ParameterError(f"explanation maps need spatial activations, got shape {tuple(act.shape)}")
    w = weights.to(act.device, act.dtype)
    w = w.view(1, -1, 1, 1) if w.dim() == 1 else w.view(len(act), -1, 1, 1)
    cam = (w * act).sum(1, keepdim=True)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return cam.clamp_min(0) if relu else cam
