"""Helpers of the causal-attribution stage: layer choice, per-method maps, channel ablation accuracy.

Guarantee: deterministic given the model, images and generator; hooks are removed after
every call (see :mod:`robaudit.analysis.causal`).

Paper: METHODS §7.2 (robaudit operationalisation of Ahmad et al., arXiv 2305.08950): default
layers are the outputs of the last conv stages of a CNN (the activation right after each
of the last ``n`` Conv2d modules when there is one, else the conv itself) or the MLP outputs
``blocks.N.mlp`` of the last ``n`` ViT blocks [robaudit choice].
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from robaudit.analysis import attribution_baselines as ab
from robaudit.analysis.causal import (
    activation,
    baseline_value,
    channel_dim,
    explanation_map,
    intervened_logits,
)
from robaudit.errors import ParameterError

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Hardswish)
_MLP = re.compile(r"(^|\.)blocks\.\d+\.mlp$")


def default_layers(module: nn.Module, n: int = 3) -> list[str]:
    """Dotted names of the last ``n`` ViT MLP blocks, else of the last ``n`` conv stage outputs."""
    named = list(module.named_modules())
    mlps = [name for name, _ in named if _MLP.search(name)]
    if mlps:
        return mlps[-n:]
    out = []
    for i, (name, m) in enumerate(named):
        if isinstance(m, nn.Conv2d):
            nxt = named[i + 1] if i + 1 < len(named) else None
            out.append(nxt[0] if nxt is not None and isinstance(nxt[1], ACTIVATIONS) else name)
    if not out:
        raise ParameterError("no Conv2d layer or ViT 'blocks.N.mlp' found: set params.layers to dotted module "
                             "names (see model.named_modules())")
    return out[-n:]


def patch_size(module: nn.Module) -> int | None:
    """The ViT patch size (timm ``patch_embed.patch_size``), if any."""
    for m in module.modules():
        pe = getattr(m, "patch_embed", None)
        size = getattr(pe, "patch_size", None)
        if size is not None:
            return int(size[0] if isinstance(size, (tuple, list)) else size)
    return None


def method_maps(method: str, module: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor,
                causal_weights: torch.Tensor, *, ig_steps: int = 50) -> torch.Tensor:
    """Importance maps (N, H, W) of ``method`` for classes ``y``; causal weights are (classes, C)."""
    if method == "causal":
        return explanation_map(module, layer, x, causal_weights[y.cpu()])
    if method == "gradcam":
        return ab.gradcam(module, layer, x, y)
    if method == "ig":
        return ab.integrated_gradients(module, x, y, steps=ig_steps)
    if method == "saliency":
        return ab.saliency(module, x, y)
    raise ParameterError(f"unknown explanation method {method!r}; use causal, gradcam, ig or saliency")


def causal_weights(ace: torch.Tensor, k: int) -> torch.Tensor:
    """w_c(y): the top-k positive ACEs of each class (rows of ``ace`` (classes, C)), normalised to sum 1."""
    w = torch.zeros_like(ace)
    for y in range(len(ace)):
        order = torch.sort(-ace[y], stable=True).indices[:k]
        w[y, order] = ace[y, order].clamp_min(0)
        s = w[y].sum()
        if s > 0:
            w[y] /= s
    return w


def ablation_accuracy(module: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor,
                      channel_sets: Sequence[Sequence[int]], *, baseline: str | torch.Tensor = "mean",
                      max_batch: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy, mean softmax p_y) on (x, y) with each set of channels of ``layer`` set to its baseline.

    Returns:
        Two tensors of shape (len(channel_sets),).
    """
    act = activation(module, layer, x)
    c = act.shape[channel_dim(act)]
    masks = torch.zeros(len(channel_sets), c, dtype=torch.bool)
    for i, s in enumerate(channel_sets):
        masks[i, list(s)] = True
    logits = intervened_logits(module, layer, x, masks, baseline_value(act, baseline), max_batch=max_batch)
    yy = y.cpu().view(1, -1)
    acc = (logits.argmax(2).cpu() == yy).double().mean(1)
    prob = logits.softmax(2).cpu().gather(2, yy.expand(len(masks), -1).unsqueeze(2)).squeeze(2).double().mean(1)
    return acc, prob
