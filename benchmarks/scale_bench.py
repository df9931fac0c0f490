"""The crop cache and the DataLoader as the synthetic set grows, against decoding the image files
each time, from one run: crops/s and memory per process at each set size.

    python benchmarks/scale_bench.py [--n 10000,100000] [--size 128] [--workers 2] [--work runs/scale]

Faces are simulated (`gapkit sim`, synthetic domain, 128 px images), kept in WORK between runs.
Each measurement runs in its own process. Reported per process: peak RSS (VmHWM) and the
anonymous (heap) memory at the end, RssAnon, which leaves out the file pages a memory map
shares with every other process through the OS page cache. The face records themselves (ids,
points, attributes) take about 1.5 GB at 100k faces in every process that reads the manifest;
the loader measurement receives the cached set as a Ray task does (its file name, points and
matrices), so it holds no records.
- decode: a DataLoader whose workers read and crop the image file of every sample;
- in RAM: today's default, every crop decoded into the process first (the time to build it,
  and its memory);
- cache build: the content-keyed memory-mapped cache, built once (cache reopen: found again,
  which costs hashing the image files for the key);
- cache + loader: DataLoader workers augmenting crops from the memory map.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
mode, manifest, size, workers, cache, batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
import torch
torch.set_num_threads(1)
from gapkit.faceset import load
from gapkit.augment import Augment, augment, to_tensor_batch
from gapkit.train.data import FaceCrops, Source, StepBatches
records = load(manifest, scheme="ibug68")[0].records if mode != "loader" else None

def memory():
    kv = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
    return {"peak_rss_mb": int(kv["VmHWM"].split()[0]) / 1024, "rss_anon_mb": int(kv["RssAnon"].split()[0]) / 1024}

B = 32
if mode == "decode":
    import cv2
    from gapkit.crop import crop_face
    class Decode(torch.utils.data.Dataset):
        def __len__(self): return batches
        def __getitem__(self, step):
            rng = np.random.default_rng([0, step])
            imgs = np.empty((B, size, size, 3), np.uint8); pts = np.empty((B, 68, 2))
            for j, i in enumerate(rng.integers(0, len(records), B)):
                r = records[i]
                crop, m = crop_face(cv2.imread(r.image, cv2.IMREAD_COLOR), r, size, 1.3)
                p = r.points @ m[:, :2].T + m[:, 2]
                imgs[j], pts[j] = augment(crop, p, Augment(), np.arange(68), rng)
            return to_tensor_batch(imgs), torch.from_numpy(pts)
    loader = torch.utils.data.DataLoader(Decode(), batch_size=None, num_workers=workers, prefetch_factor=4)
    t = time.perf_counter(); n = sum(len(x) for x, _ in loader); s = time.perf_counter() - t
    out = {"crops_per_s": n / s}
elif mode == "ram":
    t = time.perf_counter(); crops = FaceCrops(records, size); s = time.perf_counter() - t
    out = {"crops_per_s": len(crops) / s, "build_s": s}
elif mode == "build":
    import pickle
    t = time.perf_counter(); crops = FaceCrops(records, size, cache=cache, threads=workers); s = time.perf_counter() - t
    out = {"crops_per_s": len(crops) / s, "build_s": s}
    Path(cache, "crops.pkl").write_bytes(pickle.dumps(crops))  # the set as a worker or Ray task receives it
else:  # cache + loader: the set arrives as its file name (no records, no pixels), as in a Ray task
    import pickle
    crops = pickle.loads(Path(cache, "crops.pkl").read_bytes())
    ds = StepBatches([Source(crops)], B, batches, Augment(), seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, prefetch_factor=4)
    t = time.perf_counter(); n = sum(len(x) for x, _ in loader); s = time.perf_counter() - t
    out = {"crops_per_s": n / s}
print(json.dumps(out | memory()))
"""


def measure(mode: str, manifest: Path, size: int, workers: int, cache: Path, batches: int) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, mode, str(manifest), str(size), str(workers), str(cache),
                        str(batches)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="10000,100000")
    ap.add_argument("--size", type=int, default=128, help="crop side in pixels")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=150, help="batches of 32 for the loader measurements")
    ap.add_argument("--work", type=Path, default=Path("runs/scale"))
    ap.add_argument("--skip-ram", action="store_true", help="leave out decoding every crop into memory")
    a = ap.parse_args()
    from gapkit.sim import SimConfig, generate

    rows = []
    for n in (int(v) for v in a.n.split(",")):
        folder = a.work / f"synthetic_{n}"
        if not (folder / "manifest.jsonl").is_file():
            t = time.perf_counter()
            generate(folder, SimConfig(domain="synthetic", n=n, size=128, seed=0), workers=a.workers)
            print(f"simulated {n} faces in {time.perf_counter() - t:.0f} s", flush=True)
        manifest = folder / "manifest.jsonl"
        cache = a.work / "cache"
        res = {"decode": measure("decode", manifest, a.size, a.workers, cache, a.batches)}
        if not a.skip_ram:
            res["in RAM"] = measure("ram", manifest, a.size, a.workers, cache, a.batches)
        shutil.rmtree(cache, ignore_errors=True)  # this script's own cache: built fresh, then reopened
        res["cache build"] = measure("build", manifest, a.size, a.workers, cache, a.batches)
        res["cache reopen"] = measure("build", manifest, a.size, a.workers, cache, a.batches)
        res["cache + loader"] = measure("loader", manifest, a.size, a.workers, cache, a.batches)
        ratio = res["cache + loader"]["crops_per_s"] / res["decode"]["crops_per_s"]
        for k, v in res.items():
            print(f"{n:>7} faces, {a.size} px | {k:<14} | {v['crops_per_s']:>8.0f} crops/s | peak RSS "
                  f"{v['peak_rss_mb']:>7.0f} MB | heap {v['rss_anon_mb']:>7.0f} MB"
                  + (f" | {v['build_s']:.0f} s" if "build_s" in v else ""), flush=True)
        print(f"{n:>7} faces: cache + loader / decode each time = {ratio:.2f}x", flush=True)
        rows.append({"n": n, "size": a.size, **res, "loader_over_decode": ratio})
    out = a.work / f"scale_{a.size}.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
