"""A CPU emulation of a CUDA device, so CI (no GPU) catches device mix-ups in stages.

Tensors "on the device" are tracked by identity inside a TorchFunctionMode: model parameters and
buffers marked with :meth:`FakeCuda.mark`, anything moved with ``.to("cuda")`` / ``.to(x.device)``,
anything created with ``device="cuda"``, and every result computed from them. ``Tensor.device``
reports ``cuda:0`` for them. Mixing them with non-scalar host tensors (arithmetic, indexing
assignment, host tensors indexed by device indices), ``.numpy()`` on them, and CUDA draws from a
CPU generator raise :class:`DeviceMix` - the errors a real GPU raises. Computation itself runs on
the CPU, so results must be bit-identical to a plain run. It cannot see CUDA-only kernel
differences, or mixing among 0-dim tensors (which CUDA allows too).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakIdKeyDictionary

CUDA = torch.device("cuda", 0)
DEV_GET = torch.Tensor.device.__get__
IS_CUDA_GET = torch.Tensor.is_cuda.__get__
DATA_SET = torch.Tensor.data.__set__
METADATA_ONLY = ("_has_compatible_shallow_copy_type",)

class DeviceMix(RuntimeError):
    pass

def _is_cuda(d):
    if isinstance(d, torch.device):
        return d.type == "cuda"
    if isinstance(d, str):
        return d.startswith("cuda")
    return False

def _is_cpu(d):
    if isinstance(d, torch.device):
        return d.type == "cpu"
    if isinstance(d, str):
        return d.startswith("cpu")
    return False

class FakeCuda(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.tag = WeakIdKeyDictionary()
        self.calls = 0

    def __enter__(self) -> FakeCuda:
        # Parameter.__deepcopy__ builds the copy with _make_subclass, which no mode sees
        self._deepcopy = torch.nn.Parameter.__deepcopy__
        fake, original = self, self._deepcopy

        def deepcopy(param: torch.nn.Parameter, memo: dict[int, Any]) -> torch.nn.Parameter:
            out = original(param, memo)
            if fake.on(param):
                fake.mark(out)
            return out

        torch.nn.Parameter.__deepcopy__ = deepcopy  # type: ignore[method-assign]
        return super().__enter__()  # type: ignore[no-any-return]

    def __exit__(self, *exc: Any) -> None:
        torch.nn.Parameter.__deepcopy__ = self._deepcopy  # type: ignore[method-assign]
        super().__exit__(*exc)

    def mark(self, t):
        if isinstance(t, torch.Tensor):
            self.tag[t] = True
        return t

    def on(self, t):
        return isinstance(t, torch.Tensor) and t in self.tag

    def _fix(self, a):
        return torch.device("cpu") if _is_cuda(a) else a

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        self.calls += 1
        name = getattr(func, "__name__", str(func))
        if func == DEV_GET:
            return CUDA if self.on(args[0]) else torch.device("cpu")
        if func == IS_CUDA_GET:
            return self.on(args[0])
        if func == DATA_SET:  # module.to(): param.data = converted
            out = func(*args, **kwargs)
            if self.on(args[1]):
                self.mark(args[0])
            elif self.on(args[0]):
                del self.tag[args[0]]
            return out
        if name in METADATA_ONLY:
            return func(*args, **kwargs)
        flat, _ = tree_flatten((args, kwargs))
        tens = [t for t in flat if isinstance(t, torch.Tensor)]
        gen = kwargs.get("generator")
        dev_kw = kwargs.get("device")
        if name in ("numpy", "__array__") and self.on(args[0]):
            raise DeviceMix(f"{name}() on a device tensor")
        if name in ("cpu",):
            out = func(*args, **kwargs)
            return out.clone() if (out is args[0] and self.on(out)) else out
        if name == "to":
            target = None
            for a in list(args[1:]) + list(kwargs.values()):
                if _is_cuda(a) or (isinstance(a, torch.Tensor) and self.on(a)):
                    target = "cuda"
                elif _is_cpu(a) or (isinstance(a, torch.Tensor) and not self.on(a)):
                    target = "cpu"
            args = tuple(self._fix(a) for a in args)
            kwargs = {k: self._fix(v) for k, v in kwargs.items()}
            out = func(*args, **kwargs)
            if target == "cuda" or (target is None and self.on(args[0])):
                if out is args[0] and not self.on(args[0]):
                    out = out.clone()
                self.mark(out)
            elif target == "cpu" and out is args[0] and self.on(args[0]):
                out = out.clone()  # a real .to('cpu') copies
            return out
        if _is_cuda(dev_kw):
            if isinstance(gen, torch.Generator) and gen.device.type == "cpu":
                raise DeviceMix(f"{name}: CUDA draw with a CPU generator")
            kwargs["device"] = torch.device("cpu")
            out = func(*args, **kwargs)
            tree_map(self.mark, out)
            return out
        if name == "copy_":
            out = func(*args, **kwargs)
            return out  # cross-device copy_ is allowed; keeps self's device
        on = [t for t in tens if self.on(t)]
        off = [t for t in tens if not self.on(t) and t.dim() > 0]
        if name == "__getitem__":
            self_t = args[0]
            idx = [t for t in tens[1:]]
            if not self.on(self_t) and any(self.on(t) for t in idx):
                raise DeviceMix("indexing a host tensor with a device index")
            out = func(*args, **kwargs)
            if self.on(self_t):
                tree_map(self.mark, out)
            return out
        if name == "__setitem__":
            self_t, val = args[0], args[2]
            idx = tree_flatten(args[1])[0]
            if not self.on(self_t):
                if any(self.on(t) for t in idx if isinstance(t, torch.Tensor)) or self.on(val):
                    raise DeviceMix("assigning device values / indices into a host tensor")
            else:
                if isinstance(val, torch.Tensor) and not self.on(val) and val.dim() > 0:
                    raise DeviceMix("assigning a host tensor into a device tensor")
            return func(*args, **kwargs)
        if on and off:
            raise DeviceMix(f"{name}: device and host tensors mixed: host shapes {[tuple(t.shape) for t in off]}")
        if isinstance(gen, torch.Generator) and on and name in ("poisson", "bernoulli", "multinomial", "normal"):
            raise DeviceMix(f"{name}: device tensor with a CPU generator")
        out = func(*args, **kwargs)
        if on:
            if name in ("tolist", "item", "__float__", "__int__", "__bool__", "__len__", "dim", "size"):
                return out
            tree_map(self.mark, out)
        return out
