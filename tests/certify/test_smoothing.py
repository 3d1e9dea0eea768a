"""Randomized smoothing CERTIFY / PREDICT (Cohen et al. 2019): analytic cases and statistics."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from robaudit.certify.clopper_pearson import lower_bound, max_certifiable_radius, upper_bound
from robaudit.certify.smoothing import ABSTAIN, certify, certify_detailed, predict
from scipy.stats import binom, norm

from robaudit.model import InputSpec, TorchModelAdapter

sys.path.insert(0, str(Path(__file__).parent))
from _smoothing_models import Constant, LinearBinary, LinearMulti, Recorder, UniformRandom  # noqa: E402

W4 = torch.tensor([1.0, -2.0, 0.5, 1.5])


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _point_at_distance(model: LinearBinary, d: float) -> torch.Tensor:
    """An image (1, 2, 2) at signed distance d (positive side) from the hyperplane."""
    w = model.w
    base = torch.full((4,), 0.5)
    s = float(base @ w + model.b)
    x = base + (d - s / float(w.norm())) * w / w.norm()
    assert abs(model.distance(x.view(1, 2, 2)) - d) < 1e-5
    return x.view(1, 2, 2)


def test_linear_binary_radius_is_sound_over_seeds():
    model = LinearBinary(W4, b=-0.3).eval()
    sigma, alpha, true_r = 0.25, 0.05, 0.2
    x = _point_at_distance(model, true_r)
    radii, preds = [], []
    seeds = 200
    for seed in range(seeds):
        c, r = certify(model, x, sigma=sigma, n0=16, n=400, alpha=alpha, batch_size=1000, generator=_gen(seed))
        preds.append(c)
        radii.append(r)
    radii_a = np.array(radii)
    violations = int((radii_a > true_r).sum())
    # the certificate fails with probability <= alpha per seed
    assert violations <= binom.ppf(0.999, seeds, alpha)
    assert set(preds) <= {1, ABSTAIN}
    assert sum(p == 1 for p in preds) > 0.9 * seeds
    # and it is not vacuous: p_A = Phi(0.8) = 0.79, so most radii are well above 0
    assert np.median(radii_a) > 0.5 * true_r


def test_linear_binary_large_n_is_close_to_true_distance():
    model = LinearBinary(W4, b=-0.3).eval()
    sigma, true_r = 0.25, 0.3
    x = _point_at_distance(model, true_r)
    c, r = certify(model, x, sigma=sigma, n0=100, n=100_000, alpha=0.001, batch_size=100_000,
                   generator=_gen(7))
    assert c == 1
    assert 0.95 * true_r <= r <= true_r


def test_noise_is_added_in_pixel_space_through_a_normalising_adapter():
    # the network sees z = (x - 0.5) / 0.5; f = 1[w.z + b > 0] has pixel-space distance |w.z+b| / (2|w|)
    net = LinearBinary(W4, b=0.0).eval()
    adapter = TorchModelAdapter(net, InputSpec((1, 2, 2), 2, (0.5,), (0.5,)))
    x = torch.tensor([0.62, 0.5, 0.5, 0.5]).view(1, 2, 2)
    pixel_distance = abs(float(((x.flatten() - 0.5) / 0.5) @ W4)) / (2 * float(W4.norm()))
    c, r = certify(adapter, x, sigma=0.1, n0=100, n=100_000, alpha=0.001, batch_size=50_000, generator=_gen(3))
    assert c == 1
    assert 0.93 * pixel_distance <= r <= pixel_distance


def test_multiclass_linear_radius_below_boundary_distance():
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(3, 6, generator=gen), torch.randn(3, generator=gen) * 0.1
    model = LinearMulti(weight, bias).eval()
    x = torch.rand(1, 2, 3, generator=gen)
    d = model.distance(x)
    top = int(model(x.unsqueeze(0)).argmax())
    alpha, seeds = 0.05, 100
    violations, certified = 0, 0
    for seed in range(seeds):
        c, r = certify(model, x, sigma=0.5 * d, n0=32, n=500, alpha=alpha, batch_size=1000, generator=_gen(seed))
        assert c in (top, ABSTAIN)
        violations += r > d
        certified += c == top
    assert violations <= binom.ppf(0.999, seeds, alpha)
    assert certified > 0.9 * seeds


def test_constant_classifier_reaches_the_radius_ceiling():
    sigma, n, alpha = 0.5, 1000, 0.001
    c, r = certify(Constant(3).eval(), torch.rand(3, 4, 4), sigma=sigma, n0=10, n=n, alpha=alpha,
                   batch_size=256, generator=_gen(0))
    expected = sigma * norm.ppf(alpha ** (1.0 / n))
    assert c == 3
    assert r == pytest.approx(expected, rel=1e-9)
    assert max_certifiable_radius(sigma, n, alpha) == pytest.approx(expected, rel=1e-12)
    assert max_certifiable_radius(1.0, 100_000, 0.001) == pytest.approx(3.81, abs=0.01)
    assert predict(Constant(3).eval(), torch.rand(3, 4, 4), sigma=sigma, n=100, alpha=alpha, batch_size=64,
                   generator=_gen(1)) == 3


@pytest.mark.parametrize("classes", [2, 10])
def test_uniformly_random_classifier_abstains(classes):
    sigma = 0.3
    model = UniformRandom(classes, sigma).eval()
    x = torch.zeros(1, 3, 3)
    certs = [certify(model, x, sigma=sigma, n0=50, n=2000, alpha=0.001, batch_size=1000, generator=_gen(s))
             for s in range(10)]
    assert all(c == (ABSTAIN, 0.0) for c in certs)
    preds = [predict(model, x, sigma=sigma, n=2000, alpha=0.001, batch_size=1000, generator=_gen(100 + s))
             for s in range(10)]
    assert all(p == ABSTAIN for p in preds)


def test_clopper_pearson_reference_values():
    p = lower_bound(99_000, 100_000, 0.001)
    assert p == pytest.approx(0.98899, abs=5e-6)
    assert norm.ppf(p) == pytest.approx(2.290, abs=5e-4)
    assert lower_bound(0, 10, 0.05) == 0.0
    assert upper_bound(10, 10, 0.05) == 1.0
    assert lower_bound(10, 10, 0.05) == pytest.approx(0.05 ** 0.1, rel=1e-12)
    assert upper_bound(3, 20, 0.01) == pytest.approx(1 - lower_bound(17, 20, 0.01), abs=1e-12)
    with pytest.raises(ValueError):
        lower_bound(5, 4, 0.01)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.77, 0.95])
def test_clopper_pearson_exact_coverage(p):
    # exact: sum the binomial pmf over the k whose bound misses p
    n, alpha = 60, 0.05
    ks = np.arange(n + 1)
    pmf = binom.pmf(ks, n, p)
    miss_low = sum(pmf[k] for k in ks if lower_bound(int(k), n, alpha) > p)
    miss_high = sum(pmf[k] for k in ks if upper_bound(int(k), n, alpha) < p)
    assert miss_low <= alpha + 1e-12 and miss_high <= alpha + 1e-12
    assert miss_low > 0.2 * alpha  # exact, not wildly conservative


def test_selection_and_estimation_use_fresh_independent_noise_without_clipping():
    sigma, n0, n, batch = 0.5, 7, 23, 10
    model = Recorder(LinearBinary(W4, b=0.0)).eval()
    x = torch.tensor([0.05, 0.95, 0.5, 0.5]).view(1, 2, 2)
    global_state = torch.get_rng_state()
    cert = certify_detailed(model, x, sigma=sigma, n0=n0, n=n, alpha=0.01, batch_size=batch, generator=_gen(11))
    assert torch.equal(torch.get_rng_state(), global_state)  # never the global RNG
    sizes = [len(t) for t in model.inputs]
    assert sizes == [7, 10, 10, 3]  # selection, then estimation; last batch partial, exactly n0 + n
    assert cert.samples == n0 + n and int(cert.counts.sum()) == n
    replica = _gen(11)
    expected = [x + sigma * torch.randn((m, 1, 2, 2), generator=replica) for m in sizes]
    for got, want in zip(model.inputs, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    seen = torch.cat(model.inputs).flatten(1)
    assert len(torch.unique(seen, dim=0)) == n0 + n  # no draw is reused between selection and estimation
    assert float(seen.min()) < 0.0 and float(seen.max()) > 1.0  # not clipped to [0, 1]
    noise = (seen - x.flatten()).flatten()
    assert float(noise.std()) == pytest.approx(sigma, rel=0.25)


def test_denoiser_hook_is_applied_to_the_noisy_input():
    clean = torch.full((1, 2, 2), 0.5)
    seen: list[torch.Tensor] = []

    def denoiser(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.clone())
        return clean.expand_as(z)  # a perfect denoiser: f sees the clean image every time

    model = LinearBinary(W4, b=0.01).eval()
    c, r = certify(model, clean, sigma=1.0, n0=10, n=200, alpha=0.01, batch_size=100, generator=_gen(0),
                   denoiser=denoiser)
    assert c == 1 and r == pytest.approx(max_certifiable_radius(1.0, 200, 0.01))
    assert sum(len(z) for z in seen) == 210 and float(torch.cat(seen).std()) > 0.5


def test_deterministic_given_seed_and_rejects_bad_input():
    model = LinearBinary(W4, b=-0.3).eval()
    x = _point_at_distance(model, 0.1)
    a = certify(model, x, sigma=0.25, n0=10, n=300, alpha=0.01, batch_size=64, generator=_gen(5))
    b = certify(model, x, sigma=0.25, n0=10, n=300, alpha=0.01, batch_size=64, generator=_gen(5))
    assert a == b
    with pytest.raises(ValueError, match="eval"):
        certify(LinearBinary(W4, 0.0).train(), x, sigma=0.25, n0=1, n=1, alpha=0.01, batch_size=1,
                generator=_gen(0))
    with pytest.raises(ValueError, match="one image"):
        certify(model, x.unsqueeze(0), sigma=0.25, n0=1, n=1, alpha=0.01, batch_size=1, generator=_gen(0))
    with pytest.raises(ValueError):
        certify(model, x, sigma=0.25, n0=1, n=1, alpha=1.5, batch_size=1, generator=_gen(0))


def test_predict_returns_top_class_when_confident():
    model = LinearBinary(W4, b=-0.3).eval()
    x = _point_at_distance(model, 0.2)
    assert predict(model, x, sigma=0.25, n=1000, alpha=0.001, batch_size=500, generator=_gen(0)) == 1
    assert math.isclose(norm.cdf(0.8), 0.788, abs_tol=1e-3)


def test_onnx_model_through_onnxruntime_matches_torch(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from robaudit.loaders import load_model

    gen = torch.Generator().manual_seed(1)
    weight, bias = torch.randn(3, 6, generator=gen), torch.randn(3, generator=gen) * 0.1
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "W", "b"], ["logits"], transB=1)],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 2, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(weight.numpy(), "W"), numpy_helper.from_array(bias.numpy(), "b")],
    )
    path = tmp_path / "linear.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    adapter = load_model(path, shape=(1, 2, 3), num_classes=3, mean=(0.0,), std=(1.0,))
    x = torch.rand(1, 2, 3, generator=gen)
    kwargs = dict(sigma=0.3, n0=20, n=500, alpha=0.01, batch_size=200)
    via_onnx = certify(adapter, x, generator=_gen(4), **kwargs)
    via_torch = certify(LinearMulti(weight, bias).eval(), x, generator=_gen(4), **kwargs)
    assert via_onnx[0] == via_torch[0] and via_onnx[1] == pytest.approx(via_torch[1], abs=1e-9)
