"""Files written by current torch.onnx.export load, and their torch twin matches onnxruntime.

Both exporters (TorchScript ``dynamo=False``, dynamo ``dynamo=True``), opsets 17-20, weights
inline or in an external data file. For each: twin vs onnxruntime logits within 1e-4 (max abs),
onnxruntime vs the original torch module within 1e-4, and twin input gradients vs the original
module's. The default suite runs a fast subset; the full matrix is ``@pytest.mark.slow``.
"""

from __future__ import annotations

import itertools

import onnx
import pytest
import torch

from robaudit.loaders.onnx_model import load_onnx
from robaudit.model import Capability

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TOL = 1e-4


def _make(name: str, small_cnn):
    import timm

    torch.manual_seed(0)
    if name == "cnn":
        return small_cnn
    if (
        name == "resnet18"
    ):  # timm default init: zero last-BN gamma, so the TorchScript exporter dedups weights
        return timm.create_model("resnet18", num_classes=10).eval()
    arch = {"vit": "vit_tiny_patch16_224", "deit": "deit_tiny_patch16_224"}[name]
    return timm.create_model(arch, num_classes=10, img_size=32, patch_size=4).eval()


def _assert_identity_dedup(proto) -> None:
    """The premise of onnx_rewrites.fold_identity_initializers: TorchScript-exported timm ResNets
    recreate deduplicated weights with Identity(initializer) nodes, which onnx2torch cannot read."""
    from robaudit.loaders.onnx_rewrites import fold_identity_initializers

    inits = {t.name for t in proto.graph.initializer}
    identities = [n for n in proto.graph.node if n.op_type == "Identity" and n.input[0] in inits]
    assert identities, "exporter no longer writes Identity(initializer); the rewrite is untested here"
    folded = fold_identity_initializers(proto)
    assert not [n for n in folded.graph.node if n.op_type == "Identity" and n.input[0] in inits]
    assert len(folded.graph.initializer) == len(proto.graph.initializer) + len(identities)
    assert len(proto.graph.node) == len(folded.graph.node) + len(identities)  # the input is untouched


def _check(tmp_path, case, small_cnn, exporter, reference, record_property):
    model_name, exporter_name, opset, external = case
    net = _make(model_name, small_cnn)
    path = tmp_path / f"{model_name}_{exporter_name}_{opset}" / "model.onnx"
    dynamo = exporter_name == "dynamo"
    exporter(net, path, dynamo=dynamo, opset=opset, external_data=external and dynamo)
    if external and not dynamo:  # the TorchScript exporter only externalises >2 GB: re-save
        onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=True,
                        location="model.onnx.data", size_threshold=0)  # fmt: skip
    if model_name == "resnet18" and not dynamo:
        _assert_identity_dedup(onnx.load(str(path)))
    has_data = (path.parent / "model.onnx.data").is_file()
    assert has_data == external
    model = load_onnx(path, mean=MEAN, std=STD)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    check = model.verify_twin(x, tol=TOL)
    with torch.no_grad():
        ort_vs_torch = float((model.logits(x) - reference(net, x, MEAN, STD)).abs().max())
    xg = x[:2].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.logits(xg).logsumexp(1).sum(), xg)
    xr = x[:2].clone().requires_grad_(True)
    (grad_ref,) = torch.autograd.grad(reference(net, xr, MEAN, STD).logsumexp(1).sum(), xr)
    grad_diff = float((grad - grad_ref).abs().max() / grad_ref.abs().max())
    opset_used = model.provenance["opset"]["ai.onnx"]
    for key, value in [("twin_max_abs_diff", check["twin_max_abs_diff"]), ("ort_vs_torch", ort_vs_torch),
                       ("grad_rel_diff", grad_diff), ("opset_in_file", opset_used)]:  # fmt: skip
        record_property(key, value)
    print(
        f"ONNXCASE {model_name} {exporter_name} opset={opset}(file {opset_used}) ext={external} "
        f"twin={check['twin']} twin_vs_ort={check['twin_max_abs_diff']:.2e} ort_vs_torch={ort_vs_torch:.2e} "
        f"grad_rel={grad_diff:.1e}"
    )
    assert check["twin"] == "ok", check["twin_reason"]
    assert check["twin_max_abs_diff"] <= TOL
    assert ort_vs_torch <= TOL
    assert grad_diff <= 1e-3
    assert model.capabilities == {Capability.GRADIENTS, Capability.TORCH_MODULE}
    assert model.provenance["external_data"] == (["model.onnx.data"] if external else [])


DEFAULT_CASES = [
    ("cnn", "torchscript", 17, False),
    ("resnet18", "torchscript", 17, False),
    ("cnn", "dynamo", 18, False),
    ("cnn", "dynamo", 20, True),
]
FULL_CASES = [
    c
    for c in itertools.product(
        ["cnn", "resnet18", "vit", "deit"], ["torchscript", "dynamo"], [17, 18, 19, 20], [False, True]
    )
    if c not in DEFAULT_CASES
]


@pytest.mark.parametrize("model_name, exporter_name, opset, external", DEFAULT_CASES)
def test_export_loads_and_twin_matches(
    tmp_path, model_name, exporter_name, opset, external, small_cnn, exporter, reference, record_property
):
    case = (model_name, exporter_name, opset, external)
    _check(tmp_path, case, small_cnn, exporter, reference, record_property)


@pytest.mark.slow
@pytest.mark.parametrize("model_name, exporter_name, opset, external", FULL_CASES)
def test_export_matrix(
    tmp_path, model_name, exporter_name, opset, external, small_cnn, exporter, reference, record_property
):
    case = (model_name, exporter_name, opset, external)
    _check(tmp_path, case, small_cnn, exporter, reference, record_property)
