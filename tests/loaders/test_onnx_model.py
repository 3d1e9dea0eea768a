"""load_onnx / OnnxModelAdapter: spec resolution, errors, fingerprint, twin dispatch and checks."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from robaudit.errors import CapabilityError, ModelLoadError
from robaudit.loaders.onnx_file import save_onnx_metadata
from robaudit.loaders.onnx_model import OnnxModelAdapter, load_onnx
from robaudit.model import Capability, PixelSpaceModel

MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)


def _x(n: int, seed: int = 1, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _hand_model(path, nodes, inputs, outputs, initializers=(), opset=19):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _gap_classifier_nodes(head: str | None = None):
    """x (N,3,8,8) -> GlobalAveragePool -> Flatten -> Gemm(3->4) [-> head op]."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], ["g" if head else "y"], transB=1),
    ]
    if head:
        nodes.append(helper.make_node(head, ["g"], ["y"], name="the_head", axis=1))
    return nodes, [w]


def test_load_resolves_spec_and_matches_torch(tmp_path, small_cnn, exporter, reference):
    path = exporter(small_cnn, tmp_path / "cnn.onnx")
    model = load_onnx(path, mean=MEAN, std=STD, class_names=[f"c{i}" for i in range(10)])
    assert isinstance(model, OnnxModelAdapter)
    assert model.spec.shape == (3, 32, 32) and model.spec.num_classes == 10
    assert model.name == "cnn" and model.spec.class_name(3) == "c3"
    assert model.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.capabilities == {Capability.GRADIENTS, Capability.TORCH_MODULE}
    assert model.provenance["twin"] == "ok" and model.provenance["contract_checked"] is True
    assert model.provenance["twin_max_abs_diff"] <= 1e-4
    x = _x(5)
    with torch.no_grad():
        out = model.logits(x)
        want = reference(small_cnn, x, MEAN, STD)
    assert out.shape == (5, 10) and out.dtype == torch.float32 and out.grad_fn is None
    assert (out - want).abs().max() <= 1e-5
    assert model.predict(x).tolist() == want.argmax(1).tolist()


def test_gradients_flow_through_the_twin(tmp_path, small_cnn, exporter, reference):
    model = load_onnx(exporter(small_cnn, tmp_path / "cnn.onnx"), mean=MEAN, std=STD)
    x = _x(3).requires_grad_(True)
    out = model.logits(x)
    assert out.grad_fn is not None
    (grad,) = torch.autograd.grad(out[:, 2].sum(), x)
    x_ref = x.detach().clone().requires_grad_(True)
    (grad_ref,) = torch.autograd.grad(reference(small_cnn, x_ref, MEAN, STD)[:, 2].sum(), x_ref)
    assert grad.abs().max() > 0
    assert torch.allclose(grad, grad_ref, atol=1e-6, rtol=1e-4)
    module = model.torch_module()
    assert isinstance(module, PixelSpaceModel) and not module.training
    assert all(not p.requires_grad for p in module.parameters())
    with torch.no_grad():
        assert (module(x) - model.logits(x)).abs().max() <= 1e-5  # takes [0, 1] inputs


def test_metadata_props_supply_mean_std_and_class_names(tmp_path, small_cnn, exporter, reference):
    path = exporter(small_cnn, tmp_path / "cnn.onnx")
    before = load_onnx(path, mean=MEAN, std=STD).fingerprint
    save_onnx_metadata(path, MEAN, STD, [f"k{i}" for i in range(10)])
    model = load_onnx(path)
    assert model.spec.mean == MEAN and model.spec.std == STD
    assert model.spec.class_names == tuple(f"k{i}" for i in range(10))
    assert model.fingerprint != before
    with torch.no_grad():
        assert (model.logits(_x(2)) - reference(small_cnn, _x(2), MEAN, STD)).abs().max() <= 1e-5
    explicit = load_onnx(path, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), class_names=None)
    assert explicit.spec.mean == (0.0, 0.0, 0.0)  # explicit arguments win over metadata
    assert explicit.spec.class_names == model.spec.class_names  # not given: from metadata


def test_missing_normalisation_names_the_fix(tmp_path, small_cnn, exporter):
    path = exporter(small_cnn, tmp_path / "cnn.onnx")
    with pytest.raises(ModelLoadError, match=r"model\.input\.mean"):
        load_onnx(path)
    with pytest.raises(ModelLoadError, match=r"model\.input\.std"):
        load_onnx(path, mean=MEAN)


def test_dynamic_spatial_dims_need_an_explicit_shape(tmp_path, small_cnn, exporter, reference):
    path = exporter(small_cnn, tmp_path / "cnn.onnx", dynamic_hw=True)
    with pytest.raises(ModelLoadError, match=r"model\.input\.shape"):
        load_onnx(path, mean=MEAN, std=STD)
    model = load_onnx(path, shape=(3, 24, 24), mean=MEAN, std=STD)
    assert model.spec.shape == (3, 24, 24) and model.has(Capability.GRADIENTS)
    with torch.no_grad():
        assert (
            model.logits(_x(2, size=24)) - reference(small_cnn, _x(2, size=24), MEAN, STD)
        ).abs().max() <= 1e-5


def test_explicit_values_that_contradict_the_graph_are_errors(tmp_path, small_cnn, exporter):
    path = exporter(small_cnn, tmp_path / "cnn.onnx")
    with pytest.raises(ModelLoadError, match=r"model\.input\.shape = \[3, 64, 64\]"):
        load_onnx(path, shape=(3, 64, 64), mean=MEAN, std=STD)
    with pytest.raises(ModelLoadError, match=r"num_classes = 10"):
        load_onnx(path, num_classes=7, mean=MEAN, std=STD)


def test_fixed_batch_dim_is_run_in_chunks(tmp_path, small_cnn, exporter, reference):
    path = exporter(small_cnn, tmp_path / "cnn.onnx", dynamic_batch=False)  # batch fixed at 2
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    model = load_onnx(path, mean=MEAN, std=STD)
    with torch.no_grad():
        assert (model.logits(_x(5)) - reference(small_cnn, _x(5), MEAN, STD)).abs().max() <= 1e-5


def test_external_data_is_loaded_and_fingerprinted(tmp_path, small_cnn, exporter, reference):
    src = onnx.load(str(exporter(small_cnn, tmp_path / "plain.onnx")))
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(src, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    data = path.parent / "weights.bin"
    assert data.stat().st_size > 1000
    model = load_onnx(path, mean=MEAN, std=STD)
    assert model.provenance["external_data"] == ["weights.bin"] and model.provenance["twin"] == "ok"
    assert model.fingerprint != hashlib.sha256(path.read_bytes()).hexdigest()
    with torch.no_grad():
        assert (model.logits(_x(2)) - reference(small_cnn, _x(2), MEAN, STD)).abs().max() <= 1e-5
    blob = bytearray(data.read_bytes())
    blob[-1] ^= 1
    data.write_bytes(bytes(blob))
    assert load_onnx(path, mean=MEAN, std=STD).fingerprint != model.fingerprint
    data.unlink()
    with pytest.raises(ModelLoadError, match=r"external data file 'weights\.bin'.*missing"):
        load_onnx(path, mean=MEAN, std=STD)


def test_file_errors_name_the_fix(tmp_path, small_cnn, exporter):
    with pytest.raises(ModelLoadError, match=r"does not exist; check model\.path"):
        load_onnx(tmp_path / "nope.onnx", mean=MEAN, std=STD)
    good = exporter(small_cnn, tmp_path / "cnn.onnx").read_bytes()
    half = tmp_path / "half.onnx"
    half.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelLoadError, match=r"truncated, corrupt or not ONNX: re-export"):
        load_onnx(half, mean=MEAN, std=STD)
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model\n" * 20)
    with pytest.raises(ModelLoadError, match=r"not ONNX|not an ONNX model"):
        load_onnx(text, mean=MEAN, std=STD)
    checkpoint = tmp_path / "weights.onnx"
    torch.save(small_cnn.state_dict(), checkpoint)
    with pytest.raises(ModelLoadError, match=r"looks like a PyTorch checkpoint"):
        load_onnx(checkpoint, mean=MEAN, std=STD)


def test_graph_shape_errors_name_the_fix(tmp_path):
    vi = helper.make_tensor_value_info
    two = _hand_model(
        tmp_path / "two.onnx",
        [helper.make_node("Add", ["a", "b"], ["y"])],
        [vi("a", TensorProto.FLOAT, ["n", 3, 8, 8]), vi("b", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [vi("y", TensorProto.FLOAT, ["n", 3, 8, 8])],
    )
    with pytest.raises(ModelLoadError, match=r"2 graph inputs \('a', 'b'\).*single NCHW image input"):
        load_onnx(two, mean=MEAN, std=STD)
    four = _hand_model(
        tmp_path / "four.onnx",
        [helper.make_node("Relu", ["x"], ["y"])],
        [vi("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [vi("y", TensorProto.FLOAT, ["n", 3, 8, 8])],
    )
    with pytest.raises(ModelLoadError, match=r"rank 4; a classifier must return 2-D logits"):
        load_onnx(four, mean=MEAN, std=STD)


def test_unconvertible_graph_stays_black_box(tmp_path):
    nodes, inits = _gap_classifier_nodes(head="Hardmax")
    vi = helper.make_tensor_value_info
    path = _hand_model(
        tmp_path / "hm.onnx",
        nodes,
        [vi("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [vi("y", TensorProto.FLOAT, ["n", 4])],
        inits,
    )
    model = load_onnx(path, mean=(0, 0, 0), std=(1, 1, 1))
    assert model.provenance["twin"] == "failed"
    assert "onnx2torch cannot convert node 'the_head' of type Hardmax-13" in model.provenance["twin_reason"]
    assert model.capabilities == frozenset()
    with pytest.raises(CapabilityError, match="Hardmax-13"):
        model.torch_module()
    x = _x(3, size=8).requires_grad_(True)
    out = model.logits(x)  # onnxruntime, no gradient
    assert out.grad_fn is None and out.shape == (3, 4)
    assert torch.equal(out.sum(1), torch.ones(3))  # one-hot rows from Hardmax
    assert model.verify_twin(_x(2, size=8))["twin"] == "failed"


def test_twin_mismatch_disables_gradients_and_is_sticky(tmp_path, small_cnn, exporter):
    model = load_onnx(exporter(small_cnn, tmp_path / "cnn.onnx"), mean=MEAN, std=STD)
    twin = model.torch_module()
    first = model.verify_twin(_x(4))
    assert first["twin"] == "ok" and first["twin_max_abs_diff"] <= 1e-4 and first["twin_checked_n"] == 4
    bias = [p for p in twin.parameters() if p.ndim == 1][-1]
    with torch.no_grad():
        bias.add_(1e-2)
    bad = model.verify_twin(_x(4))
    assert bad["twin"] == "mismatch" and 9e-3 < bad["twin_max_abs_diff"] < 1.1e-2
    assert model.provenance["twin"] == "mismatch" and not model.has(Capability.GRADIENTS)
    with pytest.raises(CapabilityError, match="mismatch|> tol"):
        model.torch_module()
    x = _x(2).requires_grad_(True)
    assert model.logits(x).grad_fn is None  # onnxruntime now, not the disagreeing twin
    with torch.no_grad():
        bias.sub_(1e-2)
    assert model.verify_twin(_x(4))["twin"] == "ok"
    assert model.provenance["twin"] == "mismatch"  # a mismatch is never forgotten
    assert model.provenance["twin_checked_n"] == 2 + 4 + 4 + 4  # load probe + three checks


def test_twin_can_be_skipped(tmp_path, small_cnn, exporter):
    model = load_onnx(exporter(small_cnn, tmp_path / "cnn.onnx"), mean=MEAN, std=STD, twin=False)
    assert model.capabilities == frozenset() and model.provenance["twin"] == "failed"
    assert model.logits(_x(2)).shape == (2, 10)
