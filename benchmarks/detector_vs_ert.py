"""gapkit's detector (real only) against dlib's ERT trainer on the same real faces, side by side.

Both train on the same nested subsets of the real training pool of a benchmark config (by
default ``examples/bench-300w.toml``: the 1,675 300-W training faces) and are scored on its
test set (LFPW test), every face cropped from its label box. gapkit trains with that
config's ``[train]`` table, the real_only strategy of the benchmark, and predicts as the
benchmark does (``flip_test``). ERT runs with the settings of the issue (oversampling
20, cascade depth 10, tree depth 4) in a side environment that has dlib
(``--dlib-python``; ``pip install dlib-bin numpy``); dlib is never a gapkit dependency.

By default (``--budget ert``) gapkit gets no more than ERT's own training time on the same
cores: it trains with ``budget_s`` = 95% of ERT's seconds (the cosine decay follows the clock)
and stops when that is spent. Nothing is selected on the
test set. Prints NME(inter_ocular) with its 95% face-bootstrap interval, FR@8%, AUC@8%, the
paired difference and training seconds, and writes ``results.json`` and ``nme.png``.

    python benchmarks/detector_vs_ert.py --dlib-python /path/to/dlibenv/bin/python
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
from gapkit.metrics import summary
from gapkit.schemes import get_scheme
from gapkit.train import FaceCrops, Source, predict, train

from side_process import run_side

ERT_OPTIONS = {"oversampling_amount": 20, "cascade_depth": 10, "tree_depth": 4, "nu": 0.1,
               "feature_pool_size": 400, "num_test_splits": 20, "be_verbose": False}


def _box(r) -> list[float]:
    x, y, w, h = r.landmark_box()
    return [x, y, x + w, y + h]


def _verdict(d) -> str:
    return "gapkit better" if d.lo > 0 else "ERT better" if d.hi < 0 else "tie"


def run_ert(python: str, train_recs, test_recs, threads: int, seed: int) -> dict:
    job = {"train": [[r.image, _box(r), r.points.tolist()] for r in train_recs],
           "test": [[r.image, _box(r)] for r in test_recs],
           "options": ERT_OPTIONS | {"num_threads": threads, "random_seed": str(seed)}}
    return run_side(python, "ert_dlib.py", job)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="examples/bench-300w.toml", help="benchmark config: data sets and [train]")
    ap.add_argument("--dlib-python", required=True, help="a Python that can import dlib")
    ap.add_argument("--n", default="50,226,all", help="N_real values (nested subsets of the pool)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", default="ert", help="'ert' (ERT's training seconds) or a fixed step count")
    ap.add_argument("--out", default="runs/detector_vs_ert")
    a = ap.parse_args()
    threads = set_threads(a.threads)
    bench = BenchConfig.from_toml(a.config)
    pool = load(bench.real_train, scheme=bench.target_scheme)[0].records
    test = load(bench.real_test, scheme=bench.target_scheme)[0].records
    scheme = get_scheme(bench.target_scheme)
    gt = np.stack([r.points for r in test])
    perm = np.random.default_rng(a.seed).permutation(len(pool))
    cfg = bench.train.model_copy(update={"seed": a.seed, "device": "cpu"})
    t = time.perf_counter()
    pool_crops = FaceCrops(pool, cfg.size, cfg.margin)
    test_crops = FaceCrops(test, cfg.size, cfg.margin)
    print(f"pool {len(pool)} faces, test {len(test)} faces (LFPW test); crops in {time.perf_counter() - t:.0f} s; "
          f"{threads} threads")
    rows = []
    for n in [len(pool) if v == "all" else min(int(v), len(pool)) for v in a.n.split(",")]:
        idx = np.sort(perm[:n])
        ert = run_ert(a.dlib_python, [pool[i] for i in idx], test, threads, a.seed)
        if a.budget == "ert":
            # ERT's seconds as a wall-clock budget (5% kept back for start-up); the clock, not the
            # step count, ends the run and drives the decay
            upd = {"steps": 10**9, "budget_s": 0.95 * ert["train_s"]}
        else:
            upd = {"steps": int(a.budget)}
        done: list[int] = []
        t = time.perf_counter()
        model = train([Source(pool_crops.subset(idx))], cfg.model_copy(update=upd),
                      progress=lambda s, n, loss, done=done: done.append(s))
        g_train = time.perf_counter() - t
        steps = done[-1]
        t = time.perf_counter()
        g_pred = predict(model, test_crops, flip=cfg.flip_test)
        g_predict = time.perf_counter() - t
        res = {}
        for name, pred, tr, pr in (("ert", ert["pred"], ert["train_s"], ert["predict_s"]),
                                   ("gapkit", g_pred, g_train, g_predict)):
            sc = summary(pred, gt, scheme, "inter_ocular", threshold=0.08, per_face=True)
            res[name] = {"nme": cell_interval(sc["per_face_nme"][None]), "fr": sc["fr@0.08"], "auc": sc["auc@0.08"],
                         "train_s": tr, "faces_per_s": len(test) / pr, "per_face": sc["per_face_nme"]}
        d = difference(res["ert"]["per_face"][None], res["gapkit"]["per_face"][None])
        rows.append({"n": n, "steps": steps, "diff": d, **res})
        print(f"N={n:5d}  ERT NME {res['ert']['nme']} FR {100 * res['ert']['fr']:.1f}% "
              f"{res['ert']['train_s']:.0f} s | gapkit ({steps} steps) NME {res['gapkit']['nme']} "
              f"FR {100 * res['gapkit']['fr']:.1f}% {g_train:.0f} s | ERT - gapkit {d}: {_verdict(d)}", flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    _table(rows)
    _save(rows, out, vars(a))


def _table(rows) -> None:
    from rich.console import Console
    from rich.table import Table

    tab = Table(title="LFPW test, label-box crops, NME(inter_ocular) % [95% interval]")
    for c in ("N_real", "ERT NME", "ERT FR@8%", "ERT train s", "gapkit NME", "gapkit FR@8%", "gapkit train s",
              "ERT - gapkit", "time ratio", "verdict"):
        tab.add_column(c)
    for r in rows:
        e, g, d = r["ert"], r["gapkit"], r["diff"]
        tab.add_row(str(r["n"]), str(e["nme"]), f"{100 * e['fr']:.1f}", f"{e['train_s']:.0f}", str(g["nme"]),
                    f"{100 * g['fr']:.1f}", f"{g['train_s']:.0f}", str(d), f"{g['train_s'] / e['train_s']:.2f}",
                    _verdict(d))
    Console(width=200).print(tab)


def _save(rows, out: Path, args: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = [{"n": r["n"], "steps": r["steps"], "ert_minus_gapkit": vars(r["diff"]),
             **{k: {kk: (vars(vv) if kk == "nme" else vv) for kk, vv in r[k].items() if kk != "per_face"}
                for k in ("ert", "gapkit")}} for r in rows]
    (out / "results.json").write_text(json.dumps({"args": args, "ert_options": ERT_OPTIONS, "rows": keep}, indent=1))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ns = [r["n"] for r in rows]
    for k, label in (("ert", "dlib ERT"), ("gapkit", "gapkit (within ERT's training time)")):
        m = np.array([r[k]["nme"].mean for r in rows])
        lo, hi = np.array([r[k]["nme"].lo for r in rows]), np.array([r[k]["nme"].hi for r in rows])
        ax.errorbar(ns, m, yerr=[m - lo, hi - m], marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("real training faces")
    ax.set_ylabel("NME (inter-ocular) %, LFPW test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "nme.png", dpi=120)
    print(f"wrote {out / 'results.json'} and {out / 'nme.png'}")


if __name__ == "__main__":
    main()
