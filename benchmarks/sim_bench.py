"""Simulator throughput at 128 px: images/s written (render + encode + native labels), on one
core and on all cores, for both domains. Target: >= 200 images/s per core.

Baseline named: one core (workers=1); the all-core figure is printed as a ratio to it.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from gapkit.sim import SimConfig, generate


def rate(domain: str, n: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        generate(Path(tmp) / "out", SimConfig(domain=domain, n=n, size=128), workers=workers)
        return n / (time.perf_counter() - t)


def main() -> None:
    cores = os.cpu_count() or 1
    print(f"cores: {cores}")
    for domain in ("synthetic", "real"):
        one = rate(domain, 600, 1)
        allc = rate(domain, 600 * cores, cores)
        print(f"{domain:9s} 1 core : {one:7.0f} images/s   (target >= 200/s per core)")
        print(f"{domain:9s} {cores} cores: {allc:7.0f} images/s   ({allc / one:.2f}x one core)")


if __name__ == "__main__":
    main()
