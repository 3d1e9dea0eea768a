"""Attention temperature scaling: softmax(q k^T / (T * sqrt(d))) in every timm attention block.

Threat model: a defense against single-patch adversarial perturbations of a ViT.
A temperature T > 1 flattens every self-attention row, so that no single token
(an adversarial patch) can dominate. It is NOT a certificate: evaluate it with
attacks re-optimised against the defended copy (white-box adaptive evaluation);
a patch optimised at T = 1 and transferred would overstate the defense.

Paper: Gu, Tresp & Qin, "Are Vision Transformers Robust to Patch Perturbations?"
(ECCV 2022). The official repository contains no implementation; robaudit's choice
is to scale all layers with ``scale = head_dim**-0.5 / T`` and no fine-tuning.
"""

from __future__ import annotations

import copy
import math

from robaudit.analysis.attention import timm_attention_modules
from robaudit.errors import CapabilityError, ParameterError
from robaudit.model import ModelAdapter


def attention_temperature(model: ModelAdapter, temperature: float) -> ModelAdapter:
    """A defended copy of ``model`` with every timm Attention softmax at temperature T.

    Args:
        model: an adapter with a torch module containing ``timm.layers.Attention`` blocks.
        temperature: T > 0 (T = 1 reproduces the model up to fused vs non-fused numerics).

    Returns:
        A new adapter (``model.with_module``) over a deep copy; ``model`` is untouched.

    Raises:
        ParameterError: T <= 0 or not finite.
        CapabilityError: the model has no torch module or no timm attention.
    """
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ParameterError(
            f"attention temperature must be a finite number > 0, got {temperature!r}; "
            "use T >= 1 to flatten attention (T = 1 is the undefended model)"
        )
    module = model.torch_module()
    if not timm_attention_modules(module):
        raise CapabilityError(
            f"model {model.name!r} has no timm attention (timm.layers.Attention blocks); the "
            "attention_temperature defense applies to timm ViT/DeiT-family models only"
        )
    defended = copy.deepcopy(module).eval()
    for _, attn in timm_attention_modules(defended):
        attn.fused_attn = False  # the fused SDPA path ignores self.scale
        attn.scale = attn.head_dim**-0.5 / t
    return model.with_module(
        defended,
        name=f"{model.name}+attention_temperature(T={t:g})",
        note=f"attention_temperature: softmax(q k^T / ({t:g} * sqrt(head_dim))) in all "
        f"{len(timm_attention_modules(defended))} timm attention blocks",
    )


def attention_temperature_of(model: ModelAdapter) -> float:
    """The temperature the model's attention runs at (1.0 for an unmodified model).

    Read back from the first attention block's ``scale`` (``head_dim**-0.5 / scale``);
    used to check that an attack really targeted the defended copy.
    """
    layers = timm_attention_modules(model.torch_module())
    if not layers:
        raise CapabilityError(f"model {model.name!r} has no timm attention")
    attn = layers[0][1]
    return float(attn.head_dim**-0.5 / attn.scale)
