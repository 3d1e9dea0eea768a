"""GaussianSampler's on-device histogram equals a bincount of the argmax over the same noise draws."""

from __future__ import annotations

import numpy as np
import torch
from robaudit.certify.smoothing import GaussianSampler
from torch import nn


def _reference(model, x: torch.Tensor, sigma: float, batch: int, num: int, seed: int, k: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    preds = []
    for start in range(0, num, batch):
        m = min(batch, num - start)
        noisy = x.unsqueeze(0) + sigma * torch.randn((m, *x.shape), generator=gen)
        preds.append(model(noisy).argmax(1))
    return torch.bincount(torch.cat(preds), minlength=k).numpy()


def test_histogram_matches_bincount_over_partial_batches_and_keeps_absent_classes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 10)).eval()
    with torch.no_grad():
        net[1].bias.copy_(torch.tensor([3.0, 2.5] + [-30.0] * 8))  # classes 2..9 never win
    x = torch.rand(3, 2, 2)
    sampler = GaussianSampler(net, x, sigma=0.5, batch_size=7, generator=torch.Generator().manual_seed(5))
    got = sampler.counts(30)
    want = _reference(net, x, 0.5, 7, 30, 5, 10)
    assert got.dtype == np.int64 and got.shape == (10,)
    assert np.array_equal(got, want) and got[0] > 0 and got[1] > 0 and got[2:].sum() == 0
    assert sampler.samples_drawn == 30 and sampler.counts(0).sum() == 0


def test_plain_callable_learns_its_class_count_from_the_logits():
    w = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))

    def model(z: torch.Tensor) -> torch.Tensor:
        return z.flatten(1) @ w

    x = torch.rand(1, 2, 2)
    sampler = GaussianSampler(model, x, sigma=1.0, batch_size=16, generator=torch.Generator().manual_seed(2))
    assert sampler.num_classes is None
    got = sampler.counts(50)
    assert sampler.num_classes == 5
    assert np.array_equal(got, _reference(model, x, 1.0, 16, 50, 2, 5)) and got.sum() == 50
