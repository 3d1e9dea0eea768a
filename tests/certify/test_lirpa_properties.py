"""Properties of the LiRPA engine that hold for any network (METHODS.md section 3.6).

Soundness by sampling and PGD on small random networks covering every supported operator;
exactness at eps = 0 and on affine networks; IBP nesting in eps; alpha-CROWN never looser
than CROWN (and actually tighter: catches slopes frozen by a clamp); a margin spec at least
as tight as ``lb_y - ub_j``; clear errors for unsupported operators and bad arguments.
"""

from __future__ import annotations

import math

import pytest
import torch
from robaudit.certify.lirpa import Method, UnsupportedOperatorError, compute_bounds
from torch import nn

from robaudit.errors import CapabilityError, ParameterError

from ._lirpa_nets import NAMES, build

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")
FAST_ALPHA = {"iterations": 8, "lr": 0.2}



def _inputs(batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, 3, 8, 8), generator=g)


def _spec(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Margin rows for the predicted class plus a random row."""
    with torch.no_grad():
        y = net(x).argmax(1)
    k = net(x).shape[1]
    eye = torch.eye(k)
    g = torch.Generator().manual_seed(3)
    rows = [torch.cat([eye[c] - eye[[j for j in range(k) if j != c]], torch.randn(1, k, generator=g)])
            for c in y.tolist()]
    return torch.stack(rows)


def _project(x0, x, eps, norm):
    if norm == math.inf:
        return torch.min(torch.max(x, x0 - eps), x0 + eps).clamp(0, 1)
    d = x - x0
    n = d.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
    return x0 + d * (eps / n).clamp(max=1.0)


def _extremes(net, x0, C, eps, norm, n_random=200, steps=20):
    """Min and max of C f over random points (+ corners for L-inf) and PGD in both directions.

    All points and all PGD runs (one per spec row and direction) go through the net as one batch.
    """
    g = torch.Generator().manual_seed(7)
    b, s = C.shape[:2]
    with torch.no_grad():
        if norm == math.inf:
            half = n_random // 2
            u = torch.rand((half, *x0.shape), generator=g) * 2 - 1
            corners = torch.sign(torch.rand((n_random - half, *x0.shape), generator=g) - 0.5)
            pts = torch.cat([u, corners]) * eps
        else:
            d = torch.randn((n_random, *x0.shape), generator=g)
            pts = d / d.flatten(2).norm(dim=2).view(n_random, b, 1, 1, 1) * eps
        xs = _project(x0.repeat(n_random, 1, 1, 1), (x0 + pts).flatten(0, 1), eps, norm)
        vals = torch.einsum("nbsk,nbk->nbs", C.expand(n_random, *C.shape), net(xs).view(n_random, b, -1))
    lo, hi = vals.amin(0), vals.amax(0)
    # PGD: copy r = (direction, row) of the batch minimises direction * C[:, row] . f
    coef = torch.cat([C.transpose(0, 1), -C.transpose(0, 1)])  # (2S, B, K)
    base = x0.repeat(2 * s, 1, 1, 1)
    x = base.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        obj = (coef * net(x).view(2 * s, b, -1)).sum()
        (grad,) = torch.autograd.grad(obj, x)
        with torch.no_grad():
            step = grad.sign() if norm == math.inf else grad / grad.flatten(1).norm(dim=1).clamp(
                min=1e-12).view(-1, 1, 1, 1)
            x = _project(base, x - eps / 4 * step, eps, norm)
    with torch.no_grad():
        v = (coef * net(x).view(2 * s, b, -1)).sum(-1)  # (2S, B)
    lo = torch.minimum(lo, v[:s].t())
    hi = torch.maximum(hi, -v[s:].t())
    return lo, hi


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("norm", [math.inf, 2.0], ids=["linf", "l2"])
def test_sound_on_random_networks(name, norm):
    net = build(name)
    x = _inputs()
    C = _spec(net, x)
    eps = 0.03 if norm == math.inf else 0.3
    lo, hi = _extremes(net, x, C, eps, norm)
    for method in METHODS:
        lb, ub = compute_bounds(net, x, eps, norm=norm, method=method, C=C, options=FAST_ALPHA)
        assert (lb <= lo + 1e-5).all(), f"{method}: lower bound above an attained value by {(lb - lo).max():.3g}"
        assert (ub >= hi - 1e-5).all(), f"{method}: upper bound below an attained value by {(hi - ub).max():.3g}"
        assert (hi - lo).sum() > 0 and torch.isfinite(lb).all() and torch.isfinite(ub).all()


@pytest.mark.parametrize("name", NAMES)
def test_eps_zero_is_exact(name):
    """At eps = 0 every neuron is stable: lb = ub = f(x0); this checks every backward transpose."""
    net = build(name)
    x = _inputs()
    with torch.no_grad():
        f = net(x)
    for method in METHODS:
        lb, ub = compute_bounds(net, x, 0.0, method=method, options=FAST_ALPHA)
        torch.testing.assert_close(lb, f, atol=1e-5, rtol=0, msg=f"{method} lb at eps=0")
        torch.testing.assert_close(ub, f, atol=1e-5, rtol=0, msg=f"{method} ub at eps=0")


@pytest.mark.parametrize("norm", [math.inf, 2.0], ids=["linf", "l2"])
def test_affine_network_is_exact(norm):
    """W x0 + b +- eps ||W_i||_q: CROWN-type methods on two stacked layers, IBP on one layer."""
    torch.manual_seed(0)
    deep = nn.Sequential(nn.Flatten(), nn.Linear(192, 20), nn.Linear(20, 6)).eval()
    shallow = nn.Sequential(nn.Flatten(), nn.Linear(192, 6)).eval()
    x = _inputs(3)
    q = 1 if norm == math.inf else 2
    for method in METHODS:
        net = shallow if method == "ibp" else deep
        W = net[1].weight if method == "ibp" else net[2].weight @ net[1].weight
        center = net(x).detach()
        radius = 0.05 * W.norm(p=q, dim=1)
        lb, ub = compute_bounds(net, x, 0.05, norm=norm, method=method, x_min=None, x_max=None)
        torch.testing.assert_close(lb, center - radius, atol=1e-5, rtol=1e-5, msg=method)
        torch.testing.assert_close(ub, center + radius, atol=1e-5, rtol=1e-5, msg=method)


def test_one_dimensional_relu_network_contains_dense_grid():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                        nn.Linear(16, 2)).eval()
    x0 = torch.tensor([[[[0.3]]]])
    grid = torch.linspace(0.3 - 0.2, 0.3 + 0.2, 4001).view(-1, 1, 1, 1)
    with torch.no_grad():
        vals = net(grid)
    for method in METHODS:
        lb, ub = compute_bounds(net, x0, 0.2, method=method, x_min=None, x_max=None, options=FAST_ALPHA)
        assert (lb[0] <= vals.min(0).values + 1e-6).all() and (ub[0] >= vals.max(0).values - 1e-6).all(), method


def test_ibp_bounds_are_nested_in_eps():
    net = build("cnn_pool_sigmoid")
    x = _inputs()
    prev = None
    for eps in (0.0, 0.01, 0.02, 0.05):
        lb, ub = compute_bounds(net, x, eps, method="ibp")
        if prev is not None:
            assert (lb <= prev[0] + 1e-6).all() and (ub >= prev[1] - 1e-6).all()
        prev = (lb, ub)


def test_pixel_box_only_tightens():
    net = build("resnet")
    x = _inputs()
    x[:, :, :2] = 0.0  # pixels at the box edge
    for method in ("ibp", "crown"):
        lb_box, ub_box = compute_bounds(net, x, 0.05, method=method)
        lb, ub = compute_bounds(net, x, 0.05, method=method, x_min=None, x_max=None)
        assert (lb_box >= lb - 1e-6).all() and (ub_box <= ub + 1e-6).all()
        assert ((lb_box - lb).sum() + (ub - ub_box).sum()) > 0


@pytest.mark.parametrize("name", ["mlp_mixed", "resnet", "functional"])
def test_alpha_crown_improves_on_crown(name):
    """Never looser than CROWN, and strictly tighter in total (slopes at 0/1 must move)."""
    net = build(name)
    x = _inputs()
    C = _spec(net, x)
    eps = 0.05
    lb_c, ub_c = compute_bounds(net, x, eps, method="crown", C=C)
    lb_a, ub_a = compute_bounds(net, x, eps, method="alpha-crown", C=C, options={"iterations": 15, "lr": 0.1})
    assert (lb_a >= lb_c - 1e-6).all() and (ub_a <= ub_c + 1e-6).all()
    assert (lb_a - lb_c).sum() + (ub_c - ub_a).sum() > 1e-4


def test_margin_spec_at_least_as_tight_as_logit_difference():
    net = build("cnn_strided")
    x = _inputs(3)
    with torch.no_grad():
        y = net(x).argmax(1)
    k = 5
    eye = torch.eye(k)
    C = torch.stack([eye[c] - eye[[j for j in range(k) if j != c]] for c in y.tolist()])
    for method in METHODS:
        lb_m, _ = compute_bounds(net, x, 0.02, method=method, C=C, options=FAST_ALPHA)
        lb, ub = compute_bounds(net, x, 0.02, method=method, options=FAST_ALPHA)
        for b, c in enumerate(y.tolist()):
            naive = lb[b, c] - ub[b, [j for j in range(k) if j != c]]
            assert (lb_m[b] >= naive - 1e-5).all(), method


def test_maxpool_raises_unsupported_operator():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(64, 5)).eval()
    with pytest.raises(UnsupportedOperatorError, match=r"MaxPool2d.*at node") as info:
        compute_bounds(net, _inputs(), 0.01)
    assert isinstance(info.value, CapabilityError)


class _Square(nn.Module):
    def forward(self, x):
        return (x.flatten(1) * x.flatten(1))[:, :5]


def test_other_unsupported_operators_are_named():
    with pytest.raises(UnsupportedOperatorError, match="mul"):
        compute_bounds(_Square().eval(), _inputs(), 0.01)
    softmax = nn.Sequential(nn.Flatten(), nn.Linear(192, 5), nn.Softmax(dim=1)).eval()
    with pytest.raises(UnsupportedOperatorError, match="Softmax"):
        compute_bounds(softmax, _inputs(), 0.01)
    training = nn.Sequential(nn.Flatten(), nn.Linear(192, 5)).train()
    with pytest.raises(UnsupportedOperatorError, match="eval"):
        compute_bounds(training, _inputs(), 0.01)


def test_method_names_and_bad_arguments():
    assert Method.parse("IBP") is Method.IBP and Method.parse("CROWN") is Method.CROWN
    assert Method.parse("alpha-CROWN") is Method.ALPHA_CROWN and Method.parse("crown_ibp") is Method.CROWN_IBP
    assert Method.parse("CROWN-Optimized") is Method.ALPHA_CROWN
    net = build("mlp_mixed")
    x = _inputs()
    with pytest.raises(ParameterError, match="method"):
        compute_bounds(net, x, 0.01, method="deeppoly")
    with pytest.raises(ParameterError, match="norm"):
        compute_bounds(net, x, 0.01, norm=1)
    with pytest.raises(ParameterError, match="eps"):
        compute_bounds(net, x, -0.1)
    with pytest.raises(ParameterError, match="C must have shape"):
        compute_bounds(net, x, 0.01, C=torch.ones(2, 3, 4))
    with pytest.raises(ParameterError, match="unknown LiRPA option"):
        compute_bounds(net, x, 0.01, method="alpha-crown", options={"iters": 3})
    lb, ub = compute_bounds(net, x, 0.01, method="alpha-crown",
                            options={"optimize_bound_args": {"iteration": 2, "lr_alpha": 0.1, "optimizer": "adam"}})
    assert (lb <= ub).all()


def test_float64_input_on_float32_network():
    """Bounds are computed in x.dtype; the network keeps its own dtype."""
    net = build("resnet")
    x = _inputs()
    lb32, ub32 = compute_bounds(net, x, 0.02, method="crown")
    lb64, ub64 = compute_bounds(net, x.double(), 0.02, method="crown")
    assert lb64.dtype == torch.float64 and next(net.parameters()).dtype == torch.float32
    torch.testing.assert_close(lb64.float(), lb32, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ub64.float(), ub32, atol=1e-4, rtol=1e-4)
