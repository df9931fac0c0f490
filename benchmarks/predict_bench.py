"""`gapkit predict` throughput and memory: the torch model file against its ONNX export on the
same faces (faces/s, ratio from one run), and peak RSS as the input grows (each size in its own
process, so one run's peak does not hide another's).

    python benchmarks/predict_bench.py MODEL.gkm [--sizes 250,1000,4000] [--threads 2]

Faces are simulated (`gapkit sim`, 128 px); label-box crops, so the detector's cost stays out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from gapkit.devices import set_threads
from gapkit.faceset import DataSource
from gapkit.predict import predict_to_manifest
from gapkit.train.onnx import load_model
model, src, out, threads = sys.argv[1:5]
set_threads(int(threads))
m = load_model(model)
rep = predict_to_manifest(m, DataSource(path=src), out, overwrite=True)
print(json.dumps({"faces": rep.faces, "s": rep.seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(model: Path, src: Path, out: Path, threads: int) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(model), str(src), str(out), str(threads)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--sizes", default="250,1000,4000")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    from gapkit.formats.manifest import read_manifest, write_manifest
    from gapkit.sim import SimConfig, generate
    from gapkit.train.detector import Detector
    from gapkit.train.onnx import export_onnx

    sizes = [int(s) for s in a.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        manifest = generate(t / "faces", SimConfig(domain="real", n=max(sizes), size=128, seed=11), workers=a.threads)
        recs = list(read_manifest(manifest))
        onnx = export_onnx(Detector.load(a.model), t / "m.onnx")
        print(f"{'faces':>6} | {'torch faces/s':>13} | {'onnx faces/s':>12} | onnx/torch | torch peak RSS MB")
        for n in sizes:
            src = t / f"n{n}.jsonl"
            write_manifest(recs[:n], src)
            pt = child(a.model, src, t / "pt.jsonl", a.threads)
            ox = child(onnx, src, t / "ox.jsonl", a.threads)
            print(f"{n:>6} | {pt['faces'] / pt['s']:>13.0f} | {ox['faces'] / ox['s']:>12.0f} | "
                  f"{(ox['faces'] / ox['s']) / (pt['faces'] / pt['s']):>10.2f} | {pt['rss_mb']:>8.0f}")


if __name__ == "__main__":
    main()
