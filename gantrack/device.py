"""Where a run computes and in which precision.

``device``: ``auto`` picks CUDA, then Apple MPS, then the CPU; ``cuda``, ``cuda:N``, ``mps`` and ``cpu``
name one. ``precision``: ``fp32`` (default) or ``bf16``, bfloat16 autocast around the models' forward
passes only — losses, probe statistics, per-sample scores, gradients' accumulation into the float32
parameters and the optimisers' state stay float32 (autocast's op lists: convolutions and matmuls run in
bfloat16, reductions and the loss functions in float32).

Asking for a device or precision the machine does not have is a ``GantrackError`` (the CLI: one line,
exit code 2), raised before any run is created — never a silent fall-back, because a run's numbers
depend on where it ran and the user asked for one place.

Random streams: every random number training draws (real indices, latent points, gradient-penalty
mixing) comes from a CPU ``torch.Generator`` and is then moved to the device, so the same seed gives
the same *inputs* on every device. The *curves* are identical run to run on the same device and
precision (CPU: bit for bit at a fixed thread count); across devices, precisions or memory formats
they agree only to floating-point rounding at first and then drift apart as a GAN's dynamics amplify
the differences — like two seeds that share their data order.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable

import torch

from .errors import GantrackError

DEVICES = ("auto", "cpu", "cuda", "mps")  # plus "cuda:N"
PRECISIONS = ("fp32", "bf16")


def _cpu_has_bf16() -> bool:
    """bfloat16 in hardware (AVX-512 BF16 or AMX): without it oneDNN emulates bf16 and is slower than fp32."""
    cpu = torch.cpu
    return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str, *, cuda: Callable[[], bool] | None = None, mps: Callable[[], bool] | None = None):
    """The ``torch.device`` for a config's ``device`` field, or a ``GantrackError`` saying why not.

    ``cuda`` / ``mps``: availability probes (default: torch's own); tests pass their own to check the
    messages on machines that lack (or have) the hardware.
    """
    cuda = cuda or torch.cuda.is_available
    mps = mps or _mps_available
    if name == "auto":
        return torch.device("cuda" if cuda() else "mps" if mps() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise GantrackError(f"device {name!r}: expected cuda or cuda:N")
        if not cuda():
            raise GantrackError(f"device {name!r}: this machine has no usable CUDA GPU (use device=auto or cpu)")
        if index and int(index) >= torch.cuda.device_count():
            raise GantrackError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        return torch.device(name)
    if name == "mps":
        if not mps():
            where = "this is not macOS" if platform.system() != "Darwin" else "MPS is not available in this torch build"
            raise GantrackError(f"device 'mps': {where} (use device=auto or cpu)")
        return torch.device("mps")
    raise GantrackError(f"unknown device {name!r}; choose one of: auto, cpu, cuda, cuda:N, mps")


def check_precision(precision: str, device: torch.device, *, cpu_bf16: Callable[[], bool] | None = None) -> None:
    """Raise a ``GantrackError`` if ``precision`` cannot run (fast) on ``device``."""
    if precision not in PRECISIONS:
        raise GantrackError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision != "bf16":
        return
    if device.type == "cpu" and not (cpu_bf16 or _cpu_has_bf16)():
        raise GantrackError(
            "precision 'bf16': this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX); use precision=fp32"
        )
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise GantrackError(f"precision 'bf16': {torch.cuda.get_device_name(device)} does not support bfloat16")


def autocast(precision: str, device: torch.device):
    """The context the models' forward passes run in: bfloat16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
