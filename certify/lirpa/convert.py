"""Map one torch.fx call (module, function or tensor method) to a bound-propagation op."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from robaudit.model import Normalize

from .errors import UnsupportedOperatorError
from .ops.activations import LeakyReLUOp, ReLUOp
from .ops.add import AddOp
from .ops.base import Op
from .ops.conv import Conv2dOp
from .ops.elementwise import ElementwiseAffineOp
from .ops.linear import LinearOp
from .ops.shape import ReshapeOp
from .ops.sshaped import SShapedOp

SUPPORTED = ("Linear, Conv2d, ReLU, LeakyReLU, Sigmoid, Tanh, BatchNorm (eval), AvgPool2d, AdaptiveAvgPool2d, "
             "Flatten/view/reshape, residual add/sub, constant add/sub/mul/div, Normalize, Identity, Dropout (eval)")
_PASS = {"contiguous", "clone", "detach", "float"}
_RESHAPE = {"flatten", "view", "reshape", "squeeze", "unsqueeze"}
_NAMES: dict[Any, str] = {
    torch.relu: "relu", F.relu: "relu", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh",
    F.tanh: "tanh", F.leaky_relu: "leaky_relu", torch.flatten: "flatten", torch.reshape: "reshape",
    torch.squeeze: "squeeze", torch.unsqueeze: "unsqueeze", operator.add: "add", operator.iadd: "add",
    torch.add: "add", operator.sub: "sub", operator.isub: "sub", torch.sub: "sub", operator.mul: "mul",
    operator.imul: "mul", torch.mul: "mul", operator.truediv: "div", torch.div: "div", operator.neg: "neg",
    torch.neg: "neg", F.avg_pool2d: "avg_pool2d", F.adaptive_avg_pool2d: "adaptive_avg_pool2d",
    F.linear: "linear", F.conv2d: "conv2d", F.dropout: "dropout",
}


def convert_call(root: nn.Module, fx_node: torch.fx.Node, env: dict[str, Any], nodes: list[Any],
                 dtype: torch.dtype, device: torch.device | str = "cpu") -> Any:
    """Evaluate ``fx_node`` and, if it depends on the input, append its graph node.

    The op's constants are built in ``dtype`` on ``device`` (where the bounds are computed),
    whatever device the module itself lives on.
    """
    from .graph import Node

    args: Any = torch.fx.node.map_arg(fx_node.args, lambda n: env[n.name])
    kwargs: Any = torch.fx.node.map_arg(fx_node.kwargs, lambda n: env[n.name])
    refs: list[int] = []
    vals = _values(args, refs)
    kvals = _values(kwargs, refs)
    if fx_node.op == "call_module":
        target: Any = root.get_submodule(str(fx_node.target))
        what = f"{type(target).__name__} (module '{fx_node.target}')"
        value = target(*vals, **kvals)
    elif fx_node.op == "call_function":
        target = fx_node.target
        what = getattr(target, "__name__", str(target))
        value = target(*vals, **kvals)
    else:
        target = fx_node.target
        what = f"Tensor.{target}"
        value = getattr(vals[0], target)(*vals[1:], **kvals)
    if not refs or not isinstance(value, torch.Tensor):
        return ("const", value)

    def unsupported(reason: str = "") -> UnsupportedOperatorError:
        return UnsupportedOperatorError(
            f"unsupported operator {what} at node '{fx_node.name}'{': ' + reason if reason else ''}; "
            f"the LiRPA engine supports {SUPPORTED}"
        )

    node_args = [a for a in (*args, *kwargs.values()) if _is_node(a)]
    first = node_args[0]
    in_value: torch.Tensor = first[2]
    if value.dim() == 0 or value.shape[0] != in_value.shape[0]:
        raise unsupported("the output does not keep the batch axis first")
    key = type(target) if fx_node.op == "call_module" else (target if fx_node.op == "call_method" else
                                                           _NAMES.get(target, target))
    if key in (nn.Identity, nn.Dropout, nn.Dropout2d, "dropout") or key in _PASS:
        if value.shape == in_value.shape and value.dtype == in_value.dtype:
            return first
        raise unsupported("changes shape or dtype")
    in_shapes = [tuple(a[2].shape[1:]) for a in node_args]
    out_shape = tuple(value.shape[1:])
    op = _make_op(key, target, args, vals, kvals, in_shapes, out_shape, dtype, device, unsupported)
    inputs = tuple(a[1] for a in node_args)
    check = op.forward(*(a[2].to(device=device, dtype=dtype) for a in node_args))
    if check.shape != value.shape or not torch.allclose(check, value.to(device=device, dtype=dtype),
                                                        rtol=1e-4, atol=1e-5):
        raise unsupported("its converted form does not reproduce the module's output")
    node = Node(len(nodes), fx_node.name, op, inputs, out_shape)
    nodes.append(node)
    return ("node", node.index, value)


def _is_node(a: Any) -> bool:
    return isinstance(a, tuple) and len(a) == 3 and a[0] == "node"


def _values(obj: Any, refs: list[int]) -> Any:
    if _is_node(obj):
        refs.append(obj[1])
        return obj[2].clone()  # in-place modules (ReLU(inplace=True), +=) must not alter stored values
    if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "const":
        return obj[1]
    if isinstance(obj, (list, tuple)):
        return type(obj)(_values(o, refs) for o in obj)
    if isinstance(obj, dict):
        return {k: _values(v, refs) for k, v in obj.items()}
    return obj


def _const(v: Any, out_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str,
           unsupported: Callable[..., Exception]) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=dtype, device=device).detach()
    if t.dim() == len(out_shape) + 1:
        if t.shape[0] != 1:
            raise unsupported("a constant operand varies along the batch axis")
        t = t[0]
    if t.dim() > len(out_shape):
        raise unsupported("a constant operand has more dimensions than the tensor")
    return t.expand(out_shape)


def _make_op(key: Any, target: Any, args: Any, vals: Any, kvals: dict[str, Any], in_shapes: list[tuple[int, ...]],
             out_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str,
             unsupported: Callable[..., Exception]) -> Op:
    def p(t: Any) -> Any:
        return None if t is None else t.detach().to(device=device, dtype=dtype)

    one = [in_shapes[0]]
    if key in (nn.ReLU, "relu", "relu_"):
        return ReLUOp(one, out_shape)
    if key in (nn.LeakyReLU, "leaky_relu"):
        slope: Any = target.negative_slope if isinstance(target, nn.Module) else (
            vals[1] if len(vals) > 1 else kvals.get("negative_slope", 0.01))
        if not 0.0 <= float(slope) <= 1.0:
            raise unsupported(f"negative_slope {slope} outside [0, 1]")
        return LeakyReLUOp(one, out_shape, float(slope))
    if key in (nn.Sigmoid, "sigmoid"):
        return SShapedOp(one, out_shape, "Sigmoid")
    if key in (nn.Tanh, "tanh"):
        return SShapedOp(one, out_shape, "Tanh")
    if key in (nn.Flatten, nn.Unflatten) or key in _RESHAPE:
        return ReshapeOp(one, out_shape)
    if key is nn.Linear:
        return LinearOp(p(target.weight), p(target.bias), one, out_shape)
    if key == "linear" and not _is_node(args[1]) and not (len(args) > 2 and _is_node(args[2])):
        return LinearOp(p(vals[1]), p(vals[2] if len(vals) > 2 else kvals.get("bias")), one, out_shape)
    if key is nn.Conv2d:
        if target.padding_mode != "zeros" or isinstance(target.padding, str):
            raise unsupported("only zero padding given as integers is supported")
        return Conv2dOp(p(target.weight), p(target.bias), stride=target.stride, padding=target.padding,
                        dilation=target.dilation, groups=target.groups, in_shapes=one, out_shape=out_shape)
    if key in (nn.BatchNorm1d, nn.BatchNorm2d):
        if target.running_mean is None:
            raise unsupported("BatchNorm without running statistics uses batch statistics")
        scale = 1.0 / torch.sqrt(target.running_var + target.eps)
        weight = target.weight if target.affine else torch.ones_like(scale)
        bias = target.bias if target.affine else torch.zeros_like(scale)
        view = (-1,) + (1,) * (len(out_shape) - 1)
        s = (weight * scale).to(device=device, dtype=dtype).view(view)
        t = (bias - target.running_mean * weight * scale).to(device=device, dtype=dtype).view(view)
        return ElementwiseAffineOp(s.detach(), t.detach(), one, out_shape, "BatchNorm")
    if key is Normalize:
        mean, std = p(target.mean)[0], p(target.std)[0]
        return ElementwiseAffineOp(1.0 / std, -mean / std, one, out_shape, "Normalize")
    if key in (nn.AvgPool2d, "avg_pool2d", nn.AdaptiveAvgPool2d, "adaptive_avg_pool2d"):
        from .ops.pooling import avgpool_op

        return avgpool_op(key, target, vals, kvals, in_shapes[0], out_shape, dtype, unsupported, device)
    if key in ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "truediv"):
        return _arith(str(key).rstrip("_"), args, vals, kvals, in_shapes, out_shape, dtype, device, unsupported)
    raise unsupported()


def _arith(name: str, args: Any, vals: Any, kvals: dict[str, Any], in_shapes: list[tuple[int, ...]],
           out_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str,
           unsupported: Callable[..., Exception]) -> Op:
    if kvals.get("alpha", 1) != 1 or kvals.get("rounding_mode") is not None:
        raise unsupported("alpha / rounding_mode arguments")
    if name == "neg":
        one = torch.full(out_shape, -1.0, dtype=dtype, device=device)
        return ElementwiseAffineOp(one, torch.zeros(out_shape, dtype=dtype, device=device), in_shapes, out_shape,
                                   "Neg")
    a_node, b_node = _is_node(args[0]), len(args) > 1 and _is_node(args[1])
    if a_node and b_node:
        if name not in ("add", "sub") or in_shapes[0] != out_shape or in_shapes[1] != out_shape:
            raise unsupported("both operands depend on the input (only same-shape add/sub is linear)")
        return AddOp(in_shapes, out_shape, 1.0 if name == "add" else -1.0)
    if tuple(in_shapes[0]) != out_shape:
        raise unsupported("a constant operand broadcasts the tensor to a larger shape")
    c = _const(vals[1] if a_node else vals[0], out_shape, dtype, device, unsupported)
    ones = torch.ones(out_shape, dtype=dtype, device=device)
    zeros = torch.zeros(out_shape, dtype=dtype, device=device)
    if name == "add":
        scale, shift = ones, c
    elif name == "sub":
        scale, shift = (ones, -c) if a_node else (-ones, c)
    elif name == "mul":
        scale, shift = c, zeros
    elif name in ("div", "truediv") and a_node:
        scale, shift = 1.0 / c, zeros
    else:
        raise unsupported("division by a tensor that depends on the input")
    return ElementwiseAffineOp(scale, shift, in_shapes[:1], out_shape, name.capitalize() + "Const")
