"""bfloat16 autocast against float32 in the trainer, side by side in one run.

Runs the default benchmark grid (`make demo`'s, on its simulated data) twice in this process,
once with ``[train] amp = true`` (bfloat16 autocast where the CPU computes it natively) and
once with ``amp = false`` (float32), each into its own folder, and prints for each: the wall
time of the grid, training steps/s of the default detector, and every cell's NME with its
interval; then the float32 − bfloat16 difference per cell, paired by test face over seeds.

    python benchmarks/precision_bench.py [--out runs/precision] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gapkit.bench import default_config, run
from gapkit.bench.report import per_face
from gapkit.bench.results import collect
from gapkit.bench.stats import cell_interval, difference
from gapkit.devices import bf16_native, set_threads
from gapkit.train.model import LandmarkNet
from gapkit.train.trainer import throughput


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/precision"))
    ap.add_argument("--data", type=Path, default=Path("runs/default-sim-data/full"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    print(f"torch threads {set_threads(args.threads)}; bfloat16 native on this CPU: {bf16_native('cpu')}")
    base = default_config(args.data, workers=2)
    walls, rows, steps = {}, {}, {}
    for name, amp in (("bf16", True), ("fp32", False)):
        cfg = base.model_copy(update={"train": base.train.model_copy(update={"amp": amp})})
        t = time.perf_counter()
        run(cfg, args.out / name)
        walls[name] = time.perf_counter() - t
        rows[name] = collect(args.out / name)
        sps = steps[name] = throughput(LandmarkNet(68, cfg.train.width), cfg.train.size, cfg.train.batch_size, steps=20, amp=amp)
        print(f"{name}: grid {walls[name] / 60:.1f} min wall, {len(rows[name])} cells; "
              f"train step ({cfg.train.size} px, width {cfg.train.width}, batch {cfg.train.batch_size}) "
              f"{sps:.1f} steps/s", flush=True)
    print(f"\nwall time fp32 / bf16: {walls['fp32'] / walls['bf16']:.2f}x")
    table = compare(rows["bf16"], rows["fp32"])
    print("\n| " + " | ".join(table["columns"]) + " |\n" + "|---" * len(table["columns"]) + "|")
    print("\n".join("| " + " | ".join(r) + " |" for r in table["rows"]))
    doc = {"run": "precision", "command": "python benchmarks/precision_bench.py --threads 2", "table": table,
           "wall_min": {k: round(v / 60, 1) for k, v in walls.items()}, "steps_per_s": steps,
           "summary": {"columns": ["precision", "grid wall (min)", "train steps/s (64 px, width 16, batch 32)"],
                       "rows": [[label, f"{walls[k] / 60:.1f}", f"{steps[k]:.1f}"]
                                for k, label in (("bf16", "bfloat16 autocast"), ("fp32", "float32"))]}}
    (args.out / "precision.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def compare(bf16_rows, fp32_rows) -> dict:
    """Each cell's NME in both precisions and their difference, paired by test face over seeds."""
    a, b = per_face(bf16_rows), per_face(fp32_rows)
    rows = []
    for k in a:
        for n in sorted(a[k]):
            d = difference(b[k][n], a[k][n])
            verdict = "tie" if not d.separates() else ("bf16 better" if d.mean > 0 else "fp32 better")
            rows.append([k, str(n), str(cell_interval(a[k][n])), str(cell_interval(b[k][n])), f"{d} {verdict}"])
    return {"columns": ["strategy", "N", "bf16 NME", "fp32 NME", "fp32 − bf16 (paired)"], "rows": rows}


if __name__ == "__main__":
    main()
