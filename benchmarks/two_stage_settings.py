"""Choose the two-stage detector's second-stage settings on a validation split of the training
pool (never on the test set).

``--val`` faces of the benchmark config's real pool (drawn by ``--seed``) are held out; stage 1
is trained once on the rest (the config's ``[train]`` with ``--steps``); each candidate second
stage (``--candidate "starts=own,steps=2400"``, repeatable; keys as ``gapkit train --refine``)
is then fitted on the same faces and scored on the held-out ones. Prints NME(inter_ocular)
with 95% intervals, each candidate's paired difference against the first, and its fit
seconds (stage 1's beside), so a setting can be picked that fits the time budget.

    python benchmarks/two_stage_settings.py --candidate starts=out_of_fold,fold_share=0.4,steps=1500,jitter=0.8 \\
        --candidate starts=own,steps=2400
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from gapkit.bench import BenchConfig
from gapkit.bench.stats import cell_interval, difference
from gapkit.devices import set_threads
from gapkit.faceset import load
from gapkit.metrics import nme
from gapkit.schemes import get_scheme
from gapkit.train import FaceCrops, Source, predict, train
from gapkit.train.fit import two_stage_settings
from gapkit.train.two_stage import fit_second_stage


def _options(text: str) -> dict:
    return dict(kv.split("=", 1) for kv in text.split(",") if kv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="examples/bench-300w.toml")
    ap.add_argument("--val", type=int, default=200, help="pool faces held out for validation")
    ap.add_argument("--steps", type=int, default=8000, help="stage 1's steps")
    ap.add_argument("--candidate", action="append", required=True, help="KEY=VALUE,... of a second stage")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/two-stage-settings")
    a = ap.parse_args()
    set_threads(a.threads)
    bench = BenchConfig.from_toml(a.config)
    pool = load(bench.real_train, scheme=bench.target_scheme, min_points=0.5)[0].records
    scheme = get_scheme(bench.target_scheme)
    perm = np.random.default_rng(a.seed + 100).permutation(len(pool))
    val, fit = [pool[i] for i in np.sort(perm[:a.val])], [pool[i] for i in np.sort(perm[a.val:])]
    cfg = bench.train.model_copy(update={"steps": a.steps, "seed": a.seed, "device": "cpu"})
    crops, val_crops = FaceCrops(fit, cfg.size, cfg.margin), FaceCrops(val, cfg.size, cfg.margin)
    gt = np.stack([r.points for r in val])
    t = time.perf_counter()
    model = train([Source(crops)], cfg)
    stage1_s = time.perf_counter() - t
    stage1 = predict(model, val_crops, flip=cfg.flip_test)
    base = nme(stage1, gt, scheme, "inter_ocular")  # fractions: the intervals print them in %
    print(f"fit {len(fit)} faces, validation {len(val)} (pool faces, never the test set); stage 1 {stage1_s:.0f} s: "
          f"NME {cell_interval(base[None])}", flush=True)
    rows = []
    for c in a.candidate:
        two = two_stage_settings(_options(c))
        t = time.perf_counter()
        refiner, rep = fit_second_stage([Source(crops)], cfg.model_copy(update={"refine": two}), model)
        fit_s = time.perf_counter() - t
        pred = refiner([r.image for r in val], stage1)[0] if refiner is not None else stage1
        err = nme(pred, gt, scheme, "inter_ocular")
        rows.append({"candidate": c, "kept": rep.used, "fit_s": fit_s, "total_s": stage1_s + fit_s,
                     "nme": cell_interval(err[None]), "per_face": err})
        print(f"{c}: NME {rows[-1]['nme']} ({'kept' if rep.used else 'not kept'}; second stage {fit_s:.0f} s, "
              f"with stage 1 {stage1_s + fit_s:.0f} s)", flush=True)
    for r in rows[1:]:
        d = difference(rows[0]["per_face"][None], r["per_face"][None])
        r["vs_first"] = d
        verdict = "better" if d.lo > 0 else "worse" if d.hi < 0 else "tie"
        print(f"{rows[0]['candidate']} - {r['candidate']}: {d} ({r['candidate']} {verdict})")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    keep = [{k: (vars(v) if k in ("nme", "vs_first") else v) for k, v in r.items() if k != "per_face"} for r in rows]
    (out / "results.json").write_text(json.dumps({"args": vars(a), "stage1_s": stage1_s,
                                                  "stage1_nme": vars(cell_interval(base[None])), "rows": keep},
                                                 indent=1))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
