"""Attribution baselines for the causal-explanation comparison: Grad-CAM, Integrated Gradients, saliency.

Guarantee: thin wrappers over captum (imported lazily inside each function) that return one
non-negative importance map (N, H, W) per image at the input resolution, so every method is
compared under the same stability / faithfulness protocol (METHODS §7.2 steps 5-6).

Papers: Selvaraju et al., "Grad-CAM", ICCV 2017; Sundararajan et al., "Axiomatic Attribution
for Deep Networks" (IG), ICML 2017; Simonyan et al., "Deep Inside Convolutional Networks"
(saliency), 2014. Map reductions [robaudit choice]: IG -> |sum over colour channels|
(black baseline, 50 steps by default); saliency -> max over colour channels of |grad|;
Grad-CAM -> ReLU(sum_c mean-grad_c * a_c), bilinearly upsampled. For token layers (N, T, D)
(ViT), Grad-CAM is computed directly (captum's LayerGradCam expects spatial maps): the
gradient is averaged over patch tokens, prefix tokens are dropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.analysis.causal import _token_grid, resolve_layer

METHODS = ("gradcam", "ig", "saliency")


def gradcam(module: nn.Module, layer: nn.Module | str, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) of class ``target`` (N,) at ``layer``."""
    target_layer = resolve_layer(module, layer)
    target = target.to(x.device).long()
    box: list[torch.Tensor] = []
    handle = target_layer.register_forward_hook(lambda _m, _i, o: box.append(o))
    try:
        with torch.no_grad():
            probe = module(x[:1])
    finally:
        handle.remove()
    del probe
    if box and box[0].dim() == 4:
        from captum.attr import LayerAttribution, LayerGradCam

        attr = LayerGradCam(module, target_layer).attribute(x, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(attr.detach(), tuple(x.shape[-2:]), "bilinear")[:, 0]
    return _token_gradcam(module, target_layer, x, target)


def _token_gradcam(module: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    box: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: object, o: torch.Tensor) -> None:
        box.append(o)

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = module(x.detach().clone().requires_grad_(True))  # frozen weights: grads flow via x
            (g,) = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), box[0])
    finally:
        handle.remove()
    act = _token_grid(box[0].detach(), None)
    grad = _token_grid(g.detach(), None)
    cam = (grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True).clamp_min(0)
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def integrated_gradients(module: nn.Module, x: torch.Tensor, target: torch.Tensor, *, steps: int = 50,
                         internal_batch_size: int = 256) -> torch.Tensor:
    """|sum over colour channels| of Integrated Gradients from a black image: (N, H, W)."""
    from captum.attr import IntegratedGradients

    attr = IntegratedGradients(module).attribute(x, baselines=torch.zeros_like(x), target=target.to(x.device).long(),
                                                 n_steps=steps, internal_batch_size=internal_batch_size)
    return attr.detach().sum(1).abs()


def saliency(module: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Vanilla gradient saliency: max over colour channels of |d logit_target / d x|: (N, H, W)."""
    from captum.attr import Saliency

    return Saliency(module).attribute(x.detach().clone().requires_grad_(True), target=target.to(x.device).long(),
                                      abs=True).detach().amax(1)
