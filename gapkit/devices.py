"""Where torch work runs: ``auto`` picks CUDA when torch sees it, else the CPU."""

from __future__ import annotations

from gapkit.errors import GapkitError


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GapkitError(f"device {device!r} asked for, but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise GapkitError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device
