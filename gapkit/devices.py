"""Where torch work runs, resolved in one place: ``auto`` picks CUDA when torch sees it, else
the CPU. Jobs resolve their configured device once and hand the result to every step."""

from __future__ import annotations

import functools
import os

from gapkit.errors import ConfigError


def resolve_device(device: str = "auto") -> str:
    import torch  # deferred: gapkit.refine and gapkit.adapt import this module and stay torch-free

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


@functools.cache  # the hardware does not change; the CNN asks at every training step
def bf16_native(device: str) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU that supports it, or a CPU
    with AVX512-BF16 or AMX. Elsewhere bf16 autocast is emulated and slower than float32."""
    import torch  # deferred: gapkit.refine and gapkit.adapt import this module and stay torch-free

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up with care
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op CPU threads (default: :func:`available_cores`); returns the count."""
    import torch  # deferred: gapkit.refine and gapkit.adapt import this module and stay torch-free

    if n is not None and n < 1:
        raise ConfigError(f"--threads must be at least 1, got {n}")
    n = n or available_cores()
    torch.set_num_threads(n)
    return n
