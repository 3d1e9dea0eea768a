"""Fixtures for the ViT patch-robustness tests: tiny random-init timm models (no demo weights, no network)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
from torch import nn

from robaudit.model import InputSpec, TorchModelAdapter


def _make_tiny_vit(seed: int = 0, *, distilled: bool = False, depth: int = 3, qk_norm: bool = False,
                   sharpen: float = 12.0) -> nn.Module:
    """A random-init timm ViT (32x32 input, 4x4 tokens, 8x8 grid); ``sharpen`` scales the qkv weights
    so that attention is far from uniform (timm's 0.02-std init gives nearly flat attention)."""
    torch.manual_seed(seed)  # test-only: timm's weight init uses the global RNG
    if distilled:
        net = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, patch_size=4,
                                num_classes=10, depth=depth)
    else:
        net = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4,
                                num_classes=10, depth=depth, embed_dim=48, num_heads=3, qk_norm=qk_norm)
    with torch.no_grad():
        for block in net.blocks:
            block.attn.qkv.weight.mul_(sharpen)
    return net.eval()


def _tiny_vit_adapter(seed: int = 0, **kw: object) -> TorchModelAdapter:
    spec = InputSpec((3, 32, 32), 10, mean=(0.5,), std=(0.25,))
    return TorchModelAdapter(_make_tiny_vit(seed, **kw), spec, name="tiny-vit")  # type: ignore[arg-type]


@pytest.fixture()
def make_tiny_vit() -> Callable[..., nn.Module]:
    return _make_tiny_vit


@pytest.fixture()
def make_vit_adapter() -> Callable[..., TorchModelAdapter]:
    return _tiny_vit_adapter


@pytest.fixture()
def vit() -> TorchModelAdapter:
    return _tiny_vit_adapter(0)


@pytest.fixture()
def images() -> torch.Tensor:
    return torch.rand((4, 3, 32, 32), generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def _one_torch_thread() -> object:
    """Tiny models on a shared, oversubscribed CPU run >10x faster on one intra-op thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run_stage(stage: object, model: object, data: object, seed: int = 0) -> object:
    """Run a stage like the runner does: units of ``unit_size`` ids, arrays concatenated, then summarize."""
    import numpy as np

    from robaudit.seeding import derive_seed, make_generator

    size = type(stage).unit_size or len(data)
    parts, counters = [], {}
    stage.check(model, data)
    for i in range(0, len(data), size):
        ids = data.ids[i : i + size]
        unit = stage.run_unit(model, data.select(ids), generator=make_generator(derive_seed(seed, i)))
        parts.append({k: np.asarray(v) for k, v in unit.arrays.items()})
        for k, v in unit.counters.items():
            counters[k] = counters.get(k, 0.0) + float(v)
    arrays = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return stage.summarize(arrays, data, counters)


@pytest.fixture()
def run_stage() -> Callable[..., object]:
    return _run_stage


def _self_labelled(model: TorchModelAdapter, n: int = 16, seed: int = 2) -> object:
    """A data set labelled with the model's own predictions (every image clean-correct)."""
    from robaudit.data import Dataset

    x = torch.rand((n, 3, 32, 32), generator=torch.Generator().manual_seed(seed))
    return Dataset(x, model.predict(x), tuple(f"img{i}" for i in range(n)), None, {"kind": "test"})


@pytest.fixture()
def self_labelled() -> Callable[..., object]:
    return _self_labelled
