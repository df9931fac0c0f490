"""`.pts` files parsed per second: gapkit's reader against numpy.loadtxt per file.

Uses the real 300-W subset in ../shared/data when present (else 2,000 generated files),
reads every file once to warm the page cache, then times the best of 5 passes of each.
Prints one ratio from one run.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from timing import best

from gapkit.formats.pts import read_pts_many

REPO = Path(__file__).resolve().parents[1]


def files() -> list[Path]:
    shared = REPO.parent / "shared" / "data" / "300w"
    if shared.is_dir():
        return sorted(shared.rglob("*.pts"))
    tmp = Path(tempfile.mkdtemp())
    text = (REPO / "fixtures/300w/lfpw/testset/image_0003.pts").read_text()
    out = []
    for i in range(2000):
        p = tmp / f"{i:05d}.pts"
        p.write_text(text)
        out.append(p)
    return out


def main() -> None:
    paths = files()
    for p in paths:
        p.read_bytes()
    t_gapkit = best(lambda: read_pts_many(paths))
    t_numpy = best(lambda: [np.loadtxt(p, skiprows=3, max_rows=68) for p in paths])
    ok = all(np.array_equal(a + 1, np.loadtxt(p, skiprows=3, max_rows=68)) for a, p in zip(read_pts_many(paths), paths, strict=True))
    n = len(paths)
    print(f"files: {n} ({'300-W subset' if 'shared' in str(paths[0]) else 'generated'}); same values: {ok}")
    print(f"numpy.loadtxt per file (baseline): {n / t_numpy:9.0f} files/s")
    print(f"gapkit read_pts_many             : {n / t_gapkit:9.0f} files/s")
    print(f"ratio gapkit / loadtxt           : {t_numpy / t_gapkit:9.2f}x   (target >= 5x)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
