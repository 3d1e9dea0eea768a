"""Where an audit runs: ``--device cpu|cuda|cuda:N|auto``, and out-of-memory detection.

Random draws do not depend on the device: every generator the runner hands a stage lives on
the CPU and stages move their draws to the data's device. A CUDA run therefore sees the same
restarts, patch positions and corruption noise as a CPU run; only floating-point rounding
differs. One deliberate exception: randomized smoothing draws its 10^4-10^5 noise samples per
image on the model's device (a generator seeded from the CPU one), because drawing them on the
host would copy every batch across; its CPU and CUDA certificates are equally valid but not equal.
"""

from __future__ import annotations

import gc

import torch

from robaudit.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """The torch device for ``spec`` on this process.

    ``auto`` is CUDA when available, else CPU. ``cuda`` under torchrun picks
    ``cuda:(LOCAL_RANK mod device count)``, one GPU per local rank; ``cuda:N`` is taken as given.

    Raises:
        ConfigError: an unknown name, or CUDA asked for where none is available.
    """
    name = spec.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not name.startswith("cuda"):
        raise ConfigError(f"unknown device {spec!r}; use one of {', '.join(DEVICE_CHOICES)} or cuda:N", "--device")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {spec} asked for CUDA but torch.cuda.is_available() is false on this machine "
                          f"(torch {torch.__version__}); use --device cpu or auto", "--device")
    count = torch.cuda.device_count()
    if name == "cuda":
        index = local_rank % count
    else:
        try:
            index = int(name.split(":", 1)[1])
        except (IndexError, ValueError):
            raise ConfigError(f"bad device {spec!r}; write cuda:N with N an integer", "--device") from None
        if not 0 <= index < count:
            raise ConfigError(f"device {spec!r} does not exist: this machine has {count} CUDA device(s)", "--device")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA (or CPU allocator) out-of-memory errors, which a smaller batch can avoid."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(err, oom_type):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text.lower()
                                              or "DefaultCPUAllocator: can't allocate memory" in text)


def release_memory(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory error, before retrying smaller."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
