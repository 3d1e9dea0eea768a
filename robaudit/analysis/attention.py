"""Attention extraction and attention rollout for timm ViT-family models.

Guarantee: :class:`AttentionRecorder` returns, for every ``timm.layers.Attention``
block, exactly the softmax attention ``softmax(q k^T * scale)`` (with the block's
own ``q_norm``/``k_norm``) that the forward pass used, captured in ONE forward pass
on a deep copy of the model with ``fused_attn`` turned off (timm's fused SDPA path
never materialises the matrix). The user's model is never mutated.

Rollout follows Abnar & Zuidema (2020) as used by Gu, Tresp & Qin, "Are Vision
Transformers Robust to Patch Perturbations?" (ECCV 2022), ``rollout_vis.py``:
fuse heads (mean/max/min), zero the lowest ``discard_ratio`` of the fused entries
(flat index 0, CLS->CLS, is exempt as in the official code), ``A_hat = (A + I)/2``
renormalised ROW-wise (``a / a.sum(-1, keepdim=True)``; the official code omits
``keepdim`` and so divides columns, a bug), and ``R = A_hat_L ... A_hat_1``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from robaudit.errors import CapabilityError, ParameterError

HEAD_FUSIONS = ("mean", "max", "min")


def timm_attention_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every ``timm.layers.Attention`` in ``module``, in forward order."""
    try:
        from timm.layers import Attention
    except ImportError:  # pragma: no cover - timm is a dependency
        return []
    return [(n, m) for n, m in module.named_modules() if isinstance(m, Attention)]


def vit_backbone(module: nn.Module) -> nn.Module | None:
    """The first sub-module with a ``patch_embed`` and ``num_prefix_tokens`` (a timm ViT), or None."""
    for m in module.modules():
        if hasattr(m, "patch_embed") and hasattr(m, "num_prefix_tokens"):
            return m
    return None


def token_geometry(module: nn.Module) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """``(num_prefix_tokens, grid (Gh, Gw), patch size (sh, sw))`` of a timm ViT.

    Raises:
        CapabilityError: no timm ViT backbone (``patch_embed`` + ``num_prefix_tokens``) inside.
    """
    vit = vit_backbone(module)
    if vit is None:
        raise CapabilityError(
            "the model has no timm ViT backbone (a module with patch_embed and num_prefix_tokens); "
            "attention analysis needs a timm VisionTransformer-family model"
        )
    pe = vit.patch_embed
    grid = tuple(int(g) for g in pe.grid_size)
    patch = tuple(int(p) for p in pe.patch_size)
    return int(vit.num_prefix_tokens), (grid[0], grid[1]), (patch[0], patch[1])


@dataclass(frozen=True)
class AttentionMaps:
    """Per-layer softmax attention from one forward pass.

    Attributes:
        logits: (B, classes) logits of that same forward pass.
        attn: (B, L, heads, N, N) softmax attention, N = prefix + Gh*Gw tokens.
        num_prefix_tokens: CLS (+ distillation / register) tokens before the patch tokens.
        grid: (Gh, Gw) patch-token grid.
        layer_names: module names of the L attention blocks.
    """

    logits: torch.Tensor
    attn: torch.Tensor
    num_prefix_tokens: int
    grid: tuple[int, int]
    layer_names: tuple[str, ...]


class AttentionRecorder:
    """Records softmax attention of all timm Attention blocks in one forward pass.

    Args:
        module: an nn.Module taking [0, 1] inputs (``model.torch_module()``). It is deep-copied;
            the copy gets ``fused_attn = False`` (its ``scale`` is kept, so a temperature-scaled
            model yields its own, flattened, attention).

    Raises:
        CapabilityError: the module contains no timm Attention block or no ViT backbone.
    """

    def __init__(self, module: nn.Module) -> None:
        if not timm_attention_modules(module):
            raise CapabilityError(
                "model has no timm attention (timm.layers.Attention blocks); attention extraction "
                "works on timm ViT/DeiT-family models only"
            )
        self.module = copy.deepcopy(module).eval()
        self.num_prefix_tokens, self.grid, self.patch_size = token_geometry(self.module)
        self._layers = timm_attention_modules(self.module)
        self._store: dict[int, torch.Tensor] = {}
        for i, (_, attn) in enumerate(self._layers):
            attn.fused_attn = False
            # attn_drop receives softmax(q k^T * scale) in the non-fused path (identity in eval).
            attn.attn_drop.register_forward_hook(self._hook(i))

    def _hook(self, index: int):  # noqa: ANN202 - hook closure
        def hook(_mod: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            self._store[index] = inputs[0].detach()

        return hook

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> AttentionMaps:
        """Run one forward pass on ``x`` (B, C, H, W) in [0, 1] and return all attention maps."""
        self._store.clear()
        logits = self.module(x)
        missing = [self._layers[i][0] for i in range(len(self._layers)) if i not in self._store]
        if missing:
            raise CapabilityError(
                f"attention blocks {missing[:3]} did not run their non-fused softmax path; "
                "the model's forward does not use timm Attention the standard way"
            )
        attn = torch.stack([self._store[i] for i in range(len(self._layers))], dim=1)
        self._store.clear()
        return AttentionMaps(logits, attn, self.num_prefix_tokens, self.grid,
                             tuple(n for n, _ in self._layers))


def extract_attention(module: nn.Module, x: torch.Tensor) -> AttentionMaps:
    """One-shot :class:`AttentionRecorder` (copies ``module``; reuse a recorder for many batches)."""
    return AttentionRecorder(module)(x)


def rollout_step(attn: torch.Tensor, head_fusion: str = "mean", discard_ratio: float = 0.9) -> torch.Tensor:
    """One layer's ``A_hat``: fuse heads, discard lowest entries, add identity, row-normalise.

    Args:
        attn: (B, heads, N, N) softmax attention of one layer.
        head_fusion: ``mean``, ``max`` or ``min`` over heads.
        discard_ratio: fraction of the fused N*N entries (per image) set to 0; flat index 0
            (CLS->CLS) is never discarded, as in the official code.

    Returns:
        (B, N, N) row-stochastic matrix.
    """
    _check_rollout_params(head_fusion, discard_ratio)
    if head_fusion == "mean":
        fused = attn.mean(1)
    elif head_fusion == "max":
        fused = attn.amax(1)
    else:
        fused = attn.amin(1)
    b, n, _ = fused.shape
    flat = fused.reshape(b, n * n).clone()
    drop = int(flat.shape[1] * discard_ratio)
    if drop > 0:
        idx = flat.topk(drop, dim=-1, largest=False).indices
        keep0 = idx == 0
        flat.scatter_(1, idx, torch.zeros_like(idx, dtype=flat.dtype))
        if keep0.any():  # restore CLS->CLS where it was among the discarded
            rows = keep0.any(1)
            flat[rows, 0] = fused.reshape(b, n * n)[rows, 0]
    a = (flat.view(b, n, n) + torch.eye(n, dtype=flat.dtype, device=flat.device)) / 2
    return a / a.sum(-1, keepdim=True)


def rollout(attn: torch.Tensor, head_fusion: str = "mean", discard_ratio: float = 0.9) -> torch.Tensor:
    """Full rollout matrix ``R = A_hat_L ... A_hat_1`` (B, N, N) from (B, L, heads, N, N) attention."""
    b, layers, _, n, _ = attn.shape
    result = torch.eye(n, dtype=attn.dtype, device=attn.device).expand(b, n, n).clone()
    for layer in range(layers):
        result = rollout_step(attn[:, layer], head_fusion, discard_ratio) @ result
    return result


def cls_rollout_grid(r: torch.Tensor, num_prefix_tokens: int, grid: tuple[int, int]) -> torch.Tensor:
    """CLS row of the rollout, prefix tokens stripped, as a (B, Gh, Gw) grid (not rescaled)."""
    row = r[:, 0, num_prefix_tokens:]
    if row.shape[1] != grid[0] * grid[1]:
        raise ParameterError(
            f"{row.shape[1]} patch tokens after stripping {num_prefix_tokens} prefix tokens, "
            f"but the grid is {grid}; pass the model's num_prefix_tokens"
        )
    return row.reshape(-1, grid[0], grid[1])


def patch_rollout(r: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """Patch-to-patch block (B, Np, Np) of the rollout matrix (prefix rows/columns stripped)."""
    return r[:, num_prefix_tokens:, num_prefix_tokens:]


def _check_rollout_params(head_fusion: str, discard_ratio: float) -> None:
    if head_fusion not in HEAD_FUSIONS:
        raise ParameterError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ParameterError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
