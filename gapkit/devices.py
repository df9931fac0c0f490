"""Where torch work runs, resolved in one place: ``auto`` picks CUDA when torch sees it, else
the CPU. Jobs resolve their configured device once and hand the result to every step."""

from __future__ import annotations

from gapkit.errors import ConfigError


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op CPU threads (default: :func:`available_cores`); returns the count."""
    import torch

    if n is not None and n < 1:
        raise ConfigError(f"--threads must be at least 1, got {n}")
    n = n or available_cores()
    torch.set_num_threads(n)
    return n
