"""A small CNN trained in-process on scikit-learn digits (8x8 grey, [0, 1]) for attack tests.

Trained once per test session (cached), deterministically, in a few seconds on one core.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

from robaudit.digits import load_digits_split
from robaudit.model import InputSpec, TorchModelAdapter


def make_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )


@functools.lru_cache(maxsize=1)
def digits_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(eval-mode CNN taking [0, 1] inputs, test images, test labels); ~97% clean accuracy."""
    with single_thread():
        return _train()


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread: much faster than oversubscribing a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    x_tr, y_tr, _, _ = load_digits_split("train")
    x_te, y_te, _, _ = load_digits_split("test")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = make_net()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(8):
            perm = torch.randperm(len(x_tr), generator=g)
            for i in range(0, len(perm), 64):
                b = perm[i:i + 64]
                opt.zero_grad()
                nn.functional.cross_entropy(net(x_tr[b]), y_tr[b]).backward()
                opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, x_te, y_te


def digits_adapter() -> tuple[TorchModelAdapter, torch.Tensor, torch.Tensor]:
    net, x, y = digits_cnn()
    spec = InputSpec(shape=(1, 8, 8), num_classes=10, mean=(0.0,), std=(1.0,))
    return TorchModelAdapter(net, spec, name="digits-cnn", pixel_space=True), x, y
