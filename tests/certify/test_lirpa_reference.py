"""The native LiRPA engine against auto_LiRPA's reference bounds (shared/lirpa_reference).

IBP and CROWN must match elementwise (``|eng - ref| <= 1e-5 + 1e-4 * scale``); alpha-CROWN must
meet the five rules of the reference README (sound, at least CROWN, half the improvement per
element, 90% of the summed improvement, not suspiciously tighter). Every bound must contain the
empirical extremes. The heaviest alpha-CROWN cases are marked slow; one per net stays default.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from robaudit.certify.lirpa import compute_bounds

from ._lirpa_reference import REF, SKIP_REASON, assert_sound, cases, crown_tol, load_net, manifest, norm_of

pytestmark = pytest.mark.skipif(REF is None, reason=SKIP_REASON)

# alpha-CROWN cases kept in the default suite (one per net type: MLP, CNN with BN); the rest run under -m slow.
FAST_ALPHA = {"mlp_relu/linf_1/alpha-CROWN/margin", "cnn_bn/linf_0/alpha-CROWN/margin"}



def _groups() -> list[tuple[str, str, str]]:
    keys = {(c["net"], c["eps_tag"], c["method"]) for c in cases() if c["method"] in ("IBP", "CROWN")}
    return sorted(keys)


def test_fixture_covers_all_nets_and_methods():
    nets = {c["net"] for c in cases()}
    assert nets == set(manifest()["nets"]), "every reference net must have cases"
    assert {c["method"] for c in cases()} == {"IBP", "CROWN", "alpha-CROWN"}


@pytest.mark.parametrize("group", _groups(), ids=lambda g: "/".join(g))
def test_ibp_and_crown_match_reference(group):
    """Logit and margin cases of one (net, eps, method) in one call: bounds are row-independent."""
    net_name, tag, method = group
    members = [c for c in cases() if (c["net"], c["eps_tag"], c["method"]) == group]
    net, data = load_net(net_name)
    x = torch.from_numpy(data["x"])
    specs = [torch.eye(10).expand(len(x), 10, 10) if c["C_key"] is None else torch.from_numpy(data[c["C_key"]])
             for c in members]
    lb, ub = compute_bounds(net, x, members[0]["eps"], norm=norm_of(members[0]), method=method,
                            C=torch.cat(specs, 1), x_min=None, x_max=None)
    offset = 0
    for case, spec in zip(members, specs):
        rows = slice(offset, offset + spec.shape[1])
        offset += spec.shape[1]
        eng_lb, eng_ub = lb[:, rows].double().numpy(), ub[:, rows].double().numpy()
        ref_lb, ref_ub = data[case["lb_key"]], data[case["ub_key"]]
        tol = crown_tol(case, ref_lb, ref_ub)
        err = np.maximum(np.abs(eng_lb - ref_lb), np.abs(eng_ub - ref_ub))
        assert (err <= tol).all(), f"{case['id']}: max |eng - ref| / tol = {(err / tol).max():.3f}"
        assert_sound(case, data, eng_lb, eng_ub)


def _alpha_cases() -> list[object]:
    out = []
    for c in cases():
        if c["method"] == "alpha-CROWN":
            marks = () if c["id"] in FAST_ALPHA else (pytest.mark.slow,)
            out.append(pytest.param(c, id=c["id"], marks=marks))
    return out


def check_alpha_rules(case, data, eng_lb, eng_ub):
    rules = manifest()["tolerances"]["alpha-CROWN"]
    ref_lb, ref_ub = data[case["lb_key"]], data[case["ub_key"]]
    cr_lb, cr_ub = data[case["crown_lb_key"]], data[case["crown_ub_key"]]
    tol = crown_tol(case, cr_lb, cr_ub)
    assert_sound(case, data, eng_lb, eng_ub)  # rule 1
    assert (eng_lb >= cr_lb - tol).all() and (eng_ub <= cr_ub + tol).all(), "rule 2: looser than CROWN"
    half = rules["elem_frac"]
    gain_lb, gain_ub = np.maximum(0, ref_lb - cr_lb), np.maximum(0, cr_ub - ref_ub)
    assert (eng_lb >= ref_lb - tol - half * gain_lb).all(), "rule 3 (lb): less than half the improvement"
    assert (eng_ub <= ref_ub + tol + half * gain_ub).all(), "rule 3 (ub): less than half the improvement"
    frac = rules["sum_frac"]
    assert (eng_lb - cr_lb).sum() >= frac * (ref_lb - cr_lb).sum() - tol.sum(), "rule 4 (lb): < 90% in total"
    assert (cr_ub - eng_ub).sum() >= frac * (cr_ub - ref_ub).sum() - tol.sum(), "rule 4 (ub): < 90% in total"
    cap = rules["cap_mult"]
    slack = tol + rules["cap_width_frac"] * (cr_ub - cr_lb)
    assert (eng_lb - cr_lb <= cap * gain_lb + slack).all(), "rule 5 (lb): suspiciously tight"
    assert (cr_ub - eng_ub <= cap * gain_ub + slack).all(), "rule 5 (ub): suspiciously tight"


@pytest.mark.parametrize("case", _alpha_cases())
def test_alpha_crown_rules(case):
    net, data = load_net(case["net"])
    x = torch.from_numpy(data["x"])
    C = torch.from_numpy(data[case["C_key"]]) if case["C_key"] else None
    lb, ub = compute_bounds(net, x, case["eps"], norm=norm_of(case), method=case["method"], C=C,
                            x_min=None, x_max=None, options=case["options"])
    check_alpha_rules(case, data, lb.double().numpy(), ub.double().numpy())


def test_alpha_rules_catch_the_clamp_freeze():
    """Returning CROWN for alpha-CROWN (the torch >= 2.14 clamp pitfall) must fail the rules."""
    case = next(c for c in cases() if c["id"] == "mlp_relu/linf_1/alpha-CROWN/margin")
    _, data = load_net(case["net"])
    with pytest.raises(AssertionError, match="rule [34]"):
        check_alpha_rules(case, data, data[case["crown_lb_key"]], data[case["crown_ub_key"]])


def test_onnx2torch_twin_matches_reference():
    """The torch twin of an ONNX model (how ONNX audits reach LiRPA) gives the same CROWN bounds."""
    onnx = pytest.importorskip("onnx")
    onnx2torch = pytest.importorskip("onnx2torch")
    case = next(c for c in cases() if c["id"] == "cnn_bn/linf_1/CROWN/margin")
    _, data = load_net(case["net"])
    twin = onnx2torch.convert(onnx.load(str(REF / manifest()["nets"][case["net"]]["onnx"]))).eval()
    lb, ub = compute_bounds(twin, torch.from_numpy(data["x"]), case["eps"], method="CROWN",
                            C=torch.from_numpy(data["C"]), x_min=None, x_max=None)
    ref_lb, ref_ub = data[case["lb_key"]], data[case["ub_key"]]
    tol = crown_tol(case, ref_lb, ref_ub)
    assert (np.abs(lb.double().numpy() - ref_lb) <= tol).all() and (np.abs(ub.double().numpy() - ref_ub) <= tol).all()
