"""The optional auto_LiRPA backend of ``compute_bounds`` and the ``lirpa`` stage.

Here auto_LiRPA is absent (PyPI's 0.3 does not import on torch 2.x), so most tests inject a fake
``auto_LiRPA`` module into ``sys.modules``. The fake records every call and, in "exact" mode,
computes the exact bounds of a *linear* network from the perturbation it receives (box ``x_L``/
``x_U`` when given, else ``eps``; dual norm for L2). Native bounds are exact on linear networks, so
the two agree only when robaudit's arguments are translated correctly. The comparison with a real
auto_LiRPA runs when one imports.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import numpy as np
import pytest
import torch
from robaudit.certify.lirpa import compute_bounds
from robaudit.certify.lirpa.auto_lirpa_backend import (
    AutoLirpaUnavailableError,
    auto_lirpa_available,
    compute_bounds_auto_lirpa,
)
from robaudit.certify.verified_accuracy import VerifiedAccuracy, VerifiedAccuracyParams
from torch import nn

from robaudit.data import Dataset
from robaudit.errors import ParameterError
from robaudit.model import InputSpec, TorchModelAdapter
from robaudit.seeding import make_generator
from robaudit.stage import Skip

from . import _lirpa_nets
from ._lirpa_reference import REF, SKIP_REASON, assert_sound, cases, crown_tol, load_net, norm_of

HAVE_AUTO_LIRPA = auto_lirpa_available()
needs_auto_lirpa = pytest.mark.skipif(
    not HAVE_AUTO_LIRPA, reason="auto_LiRPA is not importable here (PyPI's 0.3 fails on torch 2.x); "
    "pip install git+https://github.com/Verified-Intelligence/auto_LiRPA to compare it with the native engine")


# ----------------------------------------------------------------------------- the fake auto_LiRPA
def _fake_auto_lirpa(mode: str = "exact") -> types.ModuleType:
    """A stand-in with auto_LiRPA's 0.5/0.6 API; ``mod.log`` records calls, ``mod.mode`` picks the answer."""
    mod = types.ModuleType("auto_LiRPA")
    mod.__version__ = "0.6.0-fake"
    mod.mode = mode
    mod.log = {"built": [], "opts": [], "calls": []}

    class PerturbationLpNorm:
        def __init__(self, eps: float = 0, norm: float = np.inf, x_L: Any = None, x_U: Any = None) -> None:
            self.eps, self.norm, self.x_L, self.x_U = eps, norm, x_L, x_U

    class BoundedTensor:
        def __init__(self, x: torch.Tensor, ptb: PerturbationLpNorm) -> None:
            self.x, self.ptb = x, ptb

    class BoundedModule:
        def __init__(self, model: nn.Module, dummy: torch.Tensor, device: Any = "auto", bound_opts: Any = None):
            if mod.mode == "cannot_convert":
                raise NotImplementedError("Unsupported operation aten::fancy")
            self.model = model
            self.dtypes = {p.dtype for p in model.parameters()}
            mod.log["built"].append(self)

        def set_bound_opts(self, opts: dict[str, Any]) -> None:
            mod.log["opts"].append(opts)

        def compute_bounds(self, x: tuple[BoundedTensor, ...], method: str, C: torch.Tensor,
                           bound_lower: bool = True, bound_upper: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
            (bt,) = x
            mod.log["calls"].append({"method": method, "C": C.clone(), "ptb": bt.ptb, "x": bt.x.clone(),
                                     "grad": torch.is_grad_enabled()})
            assert method in ("IBP", "CROWN", "CROWN-IBP", "alpha-CROWN"), method
            batch, n_spec = C.shape[:2]
            if mod.mode == "constant":
                return -torch.ones(batch, n_spec), torch.ones(batch, n_spec)
            if mod.mode == "bad_shape":
                return torch.zeros(batch, n_spec + 1), torch.zeros(batch, n_spec + 1)
            lb, ub = _exact_linear_bounds(self.model, bt.x, bt.ptb, C)
            return lb.requires_grad_(True), ub.requires_grad_(True)  # the backend must detach

    mod.PerturbationLpNorm, mod.BoundedTensor, mod.BoundedModule = PerturbationLpNorm, BoundedTensor, BoundedModule
    return mod


def _exact_linear_bounds(model: nn.Module, x: torch.Tensor, ptb: Any, C: torch.Tensor):
    """min / max of ``C f`` over the perturbation, for an affine ``f`` (as auto_LiRPA concretises)."""
    d = x[0].numel()
    with torch.no_grad():
        bias = model(torch.zeros_like(x[:1]))[0]
        W = (model(torch.eye(d, dtype=x.dtype).reshape(d, *x.shape[1:])) - bias).T  # (K, D)
    A, c = C @ W, C @ bias  # (B, S, D), (B, S)
    flat = x.reshape(len(x), -1, 1)
    if ptb.norm == np.inf:
        lo = flat - ptb.eps if ptb.x_L is None else ptb.x_L.reshape(flat.shape)
        hi = flat + ptb.eps if ptb.x_U is None else ptb.x_U.reshape(flat.shape)
        mid, rad = (A @ ((lo + hi) / 2)).squeeze(-1), (A.abs() @ ((hi - lo) / 2)).squeeze(-1)
    else:
        mid, rad = (A @ flat).squeeze(-1), ptb.eps * A.norm(dim=-1)
    return mid - rad + c, mid + rad + c


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    mod = _fake_auto_lirpa()
    monkeypatch.setitem(sys.modules, "auto_LiRPA", mod)
    return mod


def _linear_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 4)).eval()  # one layer: IBP is exact too


def _inputs(n: int = 3) -> torch.Tensor:
    x = torch.rand((n, 3, 4, 4), generator=torch.Generator().manual_seed(1))
    x[:, 0, 0] = 0.0  # pixels on the box edges: clipping changes the bounds
    x[:, 1, 1] = 1.0
    return x


# ----------------------------------------------------------------------------- argument translation
@pytest.mark.parametrize(("given", "sent"), [("ibp", "IBP"), ("CROWN", "CROWN"), ("backward", "CROWN"),
                                             ("crown_ibp", "CROWN-IBP"), ("alpha-crown", "alpha-CROWN"),
                                             ("CROWN-Optimized", "alpha-CROWN")])
def test_method_names_are_translated(fake, given, sent):
    compute_bounds(_linear_net(), _inputs(), 0.01, method=given, backend="auto_lirpa")
    (call,) = fake.log["calls"]
    assert call["method"] == sent
    assert call["grad"] == (sent == "alpha-CROWN"), "only alpha-CROWN needs autograd"


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
def test_linf_box_becomes_x_L_x_U_and_matches_native(fake, method):
    net, x, eps = _linear_net(), _inputs(), 0.1
    lb, ub = compute_bounds(net, x, eps, method=method, backend="auto_lirpa", options={"iterations": 2})
    ptb = fake.log["calls"][0]["ptb"]
    assert ptb.norm == np.inf and ptb.eps == pytest.approx(eps)
    torch.testing.assert_close(ptb.x_L, (x - eps).clamp(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(ptb.x_U, (x + eps).clamp(0, 1), rtol=0, atol=0)
    nlb, nub = compute_bounds(net, x, eps, method=method)
    torch.testing.assert_close(lb, nlb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ub, nub, rtol=1e-5, atol=1e-5)
    assert lb.shape == ub.shape == (3, 4) and not lb.requires_grad and not ub.requires_grad


def test_linf_without_box_sends_eps_only(fake):
    net, x, eps = _linear_net(), _inputs(), 0.1
    lb, ub = compute_bounds(net, x, eps, method="crown", x_min=None, x_max=None, backend="auto_lirpa")
    ptb = fake.log["calls"][0]["ptb"]
    assert ptb.x_L is None and ptb.x_U is None and ptb.eps == pytest.approx(eps) and ptb.norm == np.inf
    nlb, nub = compute_bounds(net, x, eps, method="crown", x_min=None, x_max=None)
    torch.testing.assert_close((lb, ub), (nlb, nub), rtol=1e-5, atol=1e-5)
    boxed_lb, _ = compute_bounds(net, x, eps, method="crown", backend="auto_lirpa")
    assert (boxed_lb > lb + 1e-4).any(), "the box must tighten bounds of inputs on the edge of [0, 1]"


def test_l2_ignores_the_box_like_native(fake):
    net, x, eps = _linear_net(), _inputs(), 0.3
    lb, ub = compute_bounds(net, x, eps, norm="l2", method="crown", backend="auto_lirpa")
    ptb = fake.log["calls"][0]["ptb"]
    assert ptb.norm == 2.0 and ptb.eps == pytest.approx(eps) and ptb.x_L is None and ptb.x_U is None
    nlb, nub = compute_bounds(net, x, eps, norm=2, method="crown")
    torch.testing.assert_close((lb, ub), (nlb, nub), rtol=1e-5, atol=1e-5)


def test_spec_matrix_is_passed_through(fake):
    net, x = _linear_net(), _inputs()
    C = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(3))
    lb, ub = compute_bounds(net, x, 0.05, method="ibp", C=C, backend="auto_lirpa")
    torch.testing.assert_close(fake.log["calls"][0]["C"], C, rtol=0, atol=0)
    assert lb.shape == ub.shape == (3, 2)
    torch.testing.assert_close((lb, ub), compute_bounds(net, x, 0.05, method="ibp", C=C), rtol=1e-5, atol=1e-5)
    compute_bounds(net, x, 0.05, method="ibp", backend="auto_lirpa")
    torch.testing.assert_close(fake.log["calls"][1]["C"], torch.eye(4).expand(3, 4, 4), rtol=0, atol=0)
    with pytest.raises(ParameterError, match="C must have shape"):
        compute_bounds(net, x, 0.05, C=torch.ones(3, 2, 5), backend="auto_lirpa")


def test_alpha_options_are_mapped(fake):
    net, x = _linear_net(), _inputs()
    compute_bounds(net, x, 0.05, method="alpha-crown", options={"iterations": 7, "lr": 0.1}, backend="auto_lirpa")
    assert fake.log["opts"][-1] == {"optimize_bound_args": {
        "iteration": 7, "lr_alpha": 0.1, "lr_decay": 0.98, "early_stop_patience": 10, "fix_interm_bounds": True,
        "start_save_best": 0.5, "keep_best": True, "optimizer": "adam", "init_alpha": True}}
    compute_bounds(net, x, 0.05, method="alpha-crown", backend="auto_lirpa",
                   options={"optimize_bound_args": {"iteration": 3, "lr_alpha": 0.2, "fix_interm_bounds": False}})
    args = fake.log["opts"][-1]["optimize_bound_args"]
    assert (args["iteration"], args["lr_alpha"], args["fix_interm_bounds"]) == (3, 0.2, False)
    n_opts = len(fake.log["opts"])
    compute_bounds(net, x, 0.05, method="crown", options={"iterations": 7}, backend="auto_lirpa")
    assert len(fake.log["opts"]) == n_opts, "only alpha-CROWN sets optimize_bound_args"
    for bad in ({"lr": -1.0}, {"no_such_option": 1}, {"optimizer": "sgd"}):
        with pytest.raises(ParameterError):
            compute_bounds(net, x, 0.05, method="alpha-crown", options=bad, backend="auto_lirpa")


def test_bounded_module_is_cached_until_the_weights_change(fake):
    net, x = _linear_net(), _inputs()
    compute_bounds(net, x, 0.05, backend="auto_lirpa")
    compute_bounds(net, x[:2], 0.02, method="ibp", backend="auto_lirpa")
    assert len(fake.log["built"]) == 1
    with torch.no_grad():
        net[1].weight.mul_(2.0)  # in place: same storage, new version counter
    lb, ub = compute_bounds(net, x, 0.05, backend="auto_lirpa")
    assert len(fake.log["built"]) == 2
    torch.testing.assert_close((lb, ub), compute_bounds(net, x, 0.05), rtol=1e-5, atol=1e-5)
    compute_bounds(net, torch.rand(2, 48), 0.05, backend="auto_lirpa")  # another input shape
    assert len(fake.log["built"]) == 3


def test_float64_inputs_use_a_float64_copy_and_leave_the_module_alone(fake):
    net, x = _linear_net(), _inputs().double()
    lb, ub = compute_bounds(net, x, 0.05, backend="auto_lirpa")
    assert fake.log["built"][0].dtypes == {torch.float64} and lb.dtype == ub.dtype == torch.float64
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    assert all(p.requires_grad and p.grad is None for p in net.parameters())
    torch.testing.assert_close((lb, ub), compute_bounds(net, x, 0.05), rtol=1e-9, atol=1e-9)


def test_wrong_shape_from_auto_lirpa_is_an_error(fake):
    fake.mode = "bad_shape"
    with pytest.raises(RuntimeError, match=r"shape \(3, 5\), expected \(3, 4\)"):
        compute_bounds(_linear_net(), _inputs(), 0.05, backend="auto_lirpa")


def test_training_mode_is_rejected(fake):
    with pytest.raises(Exception, match="training mode"):
        compute_bounds(_linear_net().train(), _inputs(), 0.05, backend="auto_lirpa")
    assert not fake.log["built"]


# ----------------------------------------------------------------------------- absent or broken install
def test_absent_auto_lirpa_is_a_parameter_error_naming_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "auto_LiRPA", None)  # makes `import auto_LiRPA` fail
    assert not auto_lirpa_available()
    with pytest.raises(AutoLirpaUnavailableError) as info:
        compute_bounds(_linear_net(), _inputs(), 0.05, backend="auto_lirpa")
    assert isinstance(info.value, ParameterError)
    msg = str(info.value)
    assert "pip install git+https://github.com/Verified-Intelligence/auto_LiRPA" in msg
    assert "backend='native'" in msg
    with pytest.raises(ParameterError, match="eps must be a finite number"):  # arguments still checked first
        compute_bounds_auto_lirpa(_linear_net(), _inputs(), -1.0)


def test_install_that_fails_on_torch2_is_unavailable(monkeypatch, tmp_path):
    pkg = tmp_path / "auto_LiRPA"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise AttributeError(\"module 'torch' has no attribute '_six'\")\n")
    monkeypatch.delitem(sys.modules, "auto_LiRPA", raising=False)
    # not monkeypatch.syspath_prepend: it calls pkg_resources, which other tests replace with a shim
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    importlib.invalidate_caches()
    assert not auto_lirpa_available()
    with pytest.raises(AutoLirpaUnavailableError, match="AttributeError.*_six.*pip install git"):
        compute_bounds(_linear_net(), _inputs(), 0.05, backend="auto_lirpa")
    stub = types.ModuleType("auto_LiRPA")
    stub.BoundedModule = object
    monkeypatch.setitem(sys.modules, "auto_LiRPA", stub)
    with pytest.raises(AutoLirpaUnavailableError, match="lacks BoundedTensor, PerturbationLpNorm"):
        compute_bounds(_linear_net(), _inputs(), 0.05, backend="auto_lirpa")


@pytest.mark.parametrize("backend", ["autolirpa", "Native", "", "crown"])
def test_unknown_backend_is_a_parameter_error(backend):
    with pytest.raises(ParameterError, match="'native', 'auto_lirpa'"):
        compute_bounds(_linear_net(), _inputs(), 0.05, backend=backend)
    with pytest.raises(ParameterError, match="native, auto_lirpa"):
        VerifiedAccuracyParams(backend=backend)


# ----------------------------------------------------------------------------- the lirpa stage
def _adapter(body: nn.Module) -> TorchModelAdapter:
    return TorchModelAdapter(body, InputSpec((3, 4, 4), 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), name="tiny")


def _dataset(model: TorchModelAdapter, n: int = 8) -> Dataset:
    x = torch.rand((n, 3, 4, 4), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        y = model.logits(x).argmax(1)
    return Dataset(x, y, tuple(f"s{i}" for i in range(n)), None, {"kind": "test"})


def _run(stage: VerifiedAccuracy, model: TorchModelAdapter, data: Dataset):
    stage.check(model, data)
    parts = [stage.run_unit(model, b, generator=make_generator(i)) for i, b in enumerate(data.batches(5))]
    arrays = {k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays}
    counters: dict[str, float] = {}
    for p in parts:
        for k, v in p.counters.items():
            counters[k] = counters.get(k, 0.0) + v
    return stage.summarize(arrays, data, counters)


def test_stage_skips_with_the_fix_when_auto_lirpa_is_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "auto_LiRPA", None)
    model = _adapter(_linear_net())
    stage = VerifiedAccuracy(VerifiedAccuracyParams(backend="auto_lirpa"))
    with pytest.raises(Skip, match=r"pip install git\+https://github.com/Verified-Intelligence/auto_LiRPA"):
        stage.check(model, _dataset(model))
    VerifiedAccuracy(VerifiedAccuracyParams()).check(model, _dataset(model))  # native: no skip


def test_stage_with_auto_lirpa_matches_native_on_a_linear_model(fake):
    model = _adapter(_linear_net(2))
    data = _dataset(model)
    kwargs = {"eps": (0.0, 0.01, 0.05), "methods": ("ibp", "crown"), "attack_steps": 3}
    native = _run(VerifiedAccuracy(VerifiedAccuracyParams(**kwargs)), model, data)
    auto = _run(VerifiedAccuracy(VerifiedAccuracyParams(backend="auto_lirpa", **kwargs)), model, data)
    assert {c["method"] for c in fake.log["calls"]} == {"IBP", "CROWN"}
    assert len(fake.log["calls"]) == 1 + 2 * 3 * 2  # check() converts once, then units x eps x methods
    assert fake.log["calls"][1]["C"].shape == (5, 4, 4)  # margin rows + the true-class row
    assert len(fake.log["built"]) == 1, "one conversion serves check() and every unit"
    for key, value in native.metrics.items():
        if not key.startswith("time_per_sample"):
            assert auto.metrics[key] == pytest.approx(value, abs=1e-6), key
    assert 0 < auto.metrics["verified_accuracy.crown.e1"], "the check needs some verified samples"
    assert auto.budget["backend"] == "auto_lirpa" and native.budget["backend"] == "native"
    assert any("auto_LiRPA 0.6.0-fake" in note for note in auto.notes), auto.notes


def test_stage_with_auto_lirpa_bounds_models_the_native_engine_cannot_trace(fake):
    fake.mode = "constant"  # [-1, 1] for every spec row: nothing verifies
    torch.manual_seed(0)
    model = _adapter(nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                   nn.Linear(16, 4)).eval())
    data = _dataset(model, 4)
    with pytest.raises(Skip, match="MaxPool2d"):
        VerifiedAccuracy(VerifiedAccuracyParams()).check(model, data)
    out = _run(VerifiedAccuracy(VerifiedAccuracyParams(eps=(0.01,), attack_steps=2, backend="auto_lirpa")),
               model, data)
    assert out.metrics["verified_accuracy.crown.e0"] == 0.0 and out.metrics["soundness_violations"] == 0
    assert any("max_crown_elements was not applied" in note for note in out.notes), out.notes


def test_stage_skips_models_auto_lirpa_cannot_convert(fake):
    fake.mode = "cannot_convert"
    model = _adapter(_linear_net())
    with pytest.raises(Skip, match="auto_LiRPA cannot bound this model.*NotImplementedError.*aten::fancy"):
        VerifiedAccuracy(VerifiedAccuracyParams(backend="auto_lirpa")).check(model, _dataset(model))


# ----------------------------------------------------------------------------- a real auto_LiRPA
@needs_auto_lirpa
@pytest.mark.skipif(REF is None, reason=SKIP_REASON)
@pytest.mark.parametrize("method", ["IBP", "CROWN"])
def test_real_auto_lirpa_matches_native_on_reference_nets(method):
    groups = sorted({(c["net"], c["eps_tag"]) for c in cases() if c["method"] == method})
    for net_name, tag in groups:
        members = [c for c in cases() if (c["net"], c["eps_tag"], c["method"]) == (net_name, tag, method)]
        net, data = load_net(net_name)
        x = torch.from_numpy(data["x"]).double()
        specs = [torch.eye(10).expand(len(x), 10, 10) if c["C_key"] is None else torch.from_numpy(data[c["C_key"]])
                 for c in members]
        kwargs = {"norm": norm_of(members[0]), "method": method, "C": torch.cat(specs, 1).double(),
                  "x_min": None, "x_max": None}
        alb, aub = compute_bounds(net, x, members[0]["eps"], backend="auto_lirpa", **kwargs)
        nlb, nub = compute_bounds(net, x, members[0]["eps"], **kwargs)
        scale = torch.maximum(torch.ones_like(nlb), torch.maximum(nlb.abs(), nub.abs()))
        err = torch.maximum((alb - nlb).abs(), (aub - nub).abs())
        assert (err <= 1e-5 + 1e-4 * scale).all(), f"{net_name}/{tag}/{method}: max err {float(err.max()):.3g}"
        offset = 0
        for case, spec in zip(members, specs):
            rows = slice(offset, offset + spec.shape[1])
            offset += spec.shape[1]
            ref_lb, ref_ub = data[case["lb_key"]], data[case["ub_key"]]
            lb, ub = alb[:, rows].numpy(), aub[:, rows].numpy()
            assert (np.maximum(abs(lb - ref_lb), abs(ub - ref_ub)) <= crown_tol(case, ref_lb, ref_ub)).all()
            assert_sound(case, data, lb, ub)


@needs_auto_lirpa
@pytest.mark.parametrize("name", ["cnn_strided", "resnet"])
def test_real_auto_lirpa_matches_native_with_the_pixel_box(name):
    net = _lirpa_nets.build(name)
    x = torch.rand((3, 3, 8, 8), generator=torch.Generator().manual_seed(4)).double()
    for method in ("IBP", "CROWN"):
        nlb, nub = compute_bounds(net, x, 0.02, method=method)
        alb, aub = compute_bounds(net, x, 0.02, method=method, backend="auto_lirpa")
        scale = torch.maximum(torch.ones_like(nlb), torch.maximum(nlb.abs(), nub.abs()))
        err = torch.maximum((alb - nlb).abs(), (aub - nub).abs())
        assert (err <= 1e-5 + 1e-4 * scale).all(), f"{name}/{method}: max err {float(err.max()):.3g}"
