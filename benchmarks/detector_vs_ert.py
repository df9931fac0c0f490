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
and stops when that is spent; ``--budget STEPS`` trains a fixed step count instead.

``--two-stage`` adds the two-stage detector (:mod:`gapkit.train.two_stage`): the one-stage
model above as stage 1, then the second stage trained from stage 1's points of the same
faces (``--refine KEY=VALUE`` sets it); its training time is stage 1's plus the second
stage's. ``--dlib68`` adds dlib's pretrained 68-point model (``face-recognition-models`` in the
side environment) as a reference row: it was trained on 300-W's training faces and more, so it
is an anchor, not a like-for-like rival. Nothing is selected on the test set: the second stage
is kept or dropped on 10% of the training faces (k-fold CV below 200). Prints NME(inter_ocular)
with its 95% face-bootstrap interval, FR@8%, AUC@8%, paired differences and training seconds,
and writes ``results.json`` and ``nme.png``.

    python benchmarks/detector_vs_ert.py --dlib-python /path/to/dlibenv/bin/python
    python benchmarks/detector_vs_ert.py --dlib-python .venv-dlib/bin/python --budget 8000 --two-stage --dlib68
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
from gapkit.train.fit import two_stage_settings
from gapkit.train.two_stage import fit_second_stage, starts_kind

from side_process import run_side

ERT_OPTIONS = {"oversampling_amount": 20, "cascade_depth": 10, "tree_depth": 4, "nu": 0.1,
               "feature_pool_size": 400, "num_test_splits": 20, "be_verbose": False}


def _box(r) -> list[float]:
    x, y, w, h = r.landmark_box()
    return [x, y, x + w, y + h]


def _verdict(d, a: str, b: str) -> str:
    """``d`` is a minus b (per-face NME, paired): positive means b is better."""
    return f"{b} better" if d.lo > 0 else f"{a} better" if d.hi < 0 else "tie"


def run_ert(python: str, train_recs, test_recs, threads: int, seed: int) -> dict:
    job = {"train": [[r.image, _box(r), r.points.tolist()] for r in train_recs],
           "test": [[r.image, _box(r)] for r in test_recs],
           "options": ERT_OPTIONS | {"num_threads": threads, "random_seed": str(seed)}}
    return run_side(python, "ert_dlib.py", job)


# The second stage of --two-stage unless --refine says otherwise: the CNN refiner (2,400 steps, jitter 1.5 px)
# from stage 1's own points at 1,000 faces and more, else from out-of-fold ones (2 folds at 40% of stage 1's
# steps); chosen on the pool's validation split (benchmarks/two_stage_settings.py); the whole fit stays
# under 600 s on two cores at 1,675 faces.
TWO_STAGE = {"starts": "auto", "fold_share": 0.4, "steps": 2400, "method": "cnn"}


def run_dlib68(python: str, calibrate, test) -> dict:
    job = {"calibrate": [[r.image, list(r.landmark_box())] for r in calibrate],
           "test": [[r.image, list(r.landmark_box())] for r in test]}
    return run_side(python, "dlib68_side.py", job)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="examples/bench-300w.toml", help="benchmark config: data sets and [train]")
    ap.add_argument("--dlib-python", required=True, help="a Python that can import dlib")
    ap.add_argument("--n", default="50,226,all", help="N_real values (nested subsets of the pool)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", default="ert", help="'ert' (ERT's training seconds) or a fixed step count")
    ap.add_argument("--two-stage", action="store_true", help="add the two-stage detector's rows")
    ap.add_argument("--refine", action="append", default=[], help="KEY=VALUE of the second stage (repeatable)")
    ap.add_argument("--dlib68", action="store_true", help="add dlib's pretrained 68-point model (reference)")
    ap.add_argument("--out", default="runs/detector_vs_ert")
    return ap.parse_args()


def _score(pred: np.ndarray, gt: np.ndarray, scheme, train_s: float | None, predict_s: float, n: int) -> dict:
    sc = summary(pred, gt, scheme, "inter_ocular", threshold=0.08, per_face=True)
    return {"nme": cell_interval(sc["per_face_nme"][None]), "fr": sc["fr@0.08"], "auc": sc["auc@0.08"],
            "train_s": train_s, "faces_per_s": n / predict_s if predict_s else None, "per_face": sc["per_face_nme"]}


def _two_stage(crops: FaceCrops, cfg, options: dict, stage1, test, one_stage: np.ndarray
               ) -> tuple[np.ndarray, float, dict]:
    """The second stage on ``crops`` after ``stage1`` (the one-stage model): predictions on
    ``test`` from the one-stage model's points, its fit seconds, and its validation report."""
    two = two_stage_settings(TWO_STAGE | options)
    t = time.perf_counter()
    refiner, rep = fit_second_stage([Source(crops)], cfg.model_copy(update={"refine": two}), stage1)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    pred = refiner([r.image for r in test], one_stage)[0] if refiner is not None else one_stage
    report = rep.as_meta() | {"predict_s": time.perf_counter() - t, "starts": starts_kind(two, len(crops))}
    verdict = f"kept: {rep.method}" if rep.used else "not kept"
    print(f"  second stage from {report['starts']} starts, {verdict} ({rep.how}: stage 1 "
          f"{rep.shape_nme_pct:.2f}% vs refined {rep.refined_nme_pct:.2f}%; {fit_s:.0f} s)", flush=True)
    return pred, fit_s, report


def main() -> None:
    a = _args()
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
    reference = None
    if a.dlib68:
        d = run_dlib68(a.dlib_python, pool[:400], test)
        reference = _score(d["pred"], gt, scheme, None, d["predict_s"], len(test))
        print(f"dlib's pretrained 68-point model (reference): NME {reference['nme']}", flush=True)
    rows = [_size(n, a, pool, pool_crops, test, test_crops, perm, cfg, gt, scheme, threads)
            for n in [len(pool) if v == "all" else min(int(v), len(pool)) for v in a.n.split(",")]]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    _table(rows, reference)
    _save(rows, reference, out, vars(a))


def _size(n: int, a, pool, pool_crops, test, test_crops, perm, cfg, gt, scheme, threads: int) -> dict:
    """Every method's row at N = ``n`` training faces."""
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
    crops = pool_crops.subset(idx)
    model = train([Source(crops)], cfg.model_copy(update=upd), progress=lambda s, n, loss, done=done: done.append(s))
    g_train = time.perf_counter() - t
    t = time.perf_counter()
    g_pred = predict(model, test_crops, flip=cfg.flip_test)
    g_predict = time.perf_counter() - t
    res = {"ert": _score(ert["pred"], gt, scheme, ert["train_s"], ert["predict_s"], len(test)),
           "gapkit": _score(g_pred, gt, scheme, g_train, g_predict, len(test))}
    row = {"n": n, "steps": done[-1], "refine": None}
    if a.two_stage:
        pred, fit_s, report = _two_stage(crops, cfg.model_copy(update=upd), dict(kv.split("=", 1) for kv in a.refine),
                                         model, test, g_pred)
        res["two_stage"] = _score(pred, gt, scheme, g_train + fit_s, g_predict + report["predict_s"], len(test))
        row["refine"] = report
    row |= res
    row["diffs"] = {f"{x}-{y}": difference(res[x]["per_face"][None], res[y]["per_face"][None])
                    for x, y in (("ert", "gapkit"), ("ert", "two_stage"), ("gapkit", "two_stage")) if y in res}
    print(f"N={n:5d}  " + " | ".join(f"{k} NME {v['nme']} FR {100 * v['fr']:.1f}% {v['train_s']:.0f} s"
                                     for k, v in res.items()), flush=True)
    for k, d in row["diffs"].items():
        x, y = k.split("-")
        print(f"         {x} - {y}: {d} {_verdict(d, x, y)}", flush=True)
    return row


NAMES = {"ert": "dlib ERT", "gapkit": "gapkit one-stage", "two_stage": "gapkit two-stage"}


def _table(rows, reference) -> None:
    from rich.console import Console
    from rich.table import Table

    tab = Table(title="LFPW test (224 faces), label-box crops, NME(inter_ocular) % [95% interval], 2 CPU threads")
    for c in ("N_real", "method", "NME", "FR@8%", "AUC@8%", "train s", "faces/s", "paired vs ERT", "vs one-stage"):
        tab.add_column(c)
    for r in rows:
        for k in ("ert", "gapkit", "two_stage"):
            if k not in r:
                continue
            v = r[k]
            vs_ert = r["diffs"].get(f"ert-{k}")
            vs_one = r["diffs"].get(f"gapkit-{k}")
            tab.add_row(str(r["n"]), NAMES[k], str(v["nme"]), f"{100 * v['fr']:.1f}", f"{v['auc']:.3f}",
                        f"{v['train_s']:.0f}", f"{v['faces_per_s']:.0f}",
                        f"{vs_ert} {_verdict(vs_ert, 'ERT', NAMES[k])}" if vs_ert else "",
                        f"{vs_one} {_verdict(vs_one, 'one-stage', 'two-stage')}" if vs_one else "")
    if reference:
        tab.add_row("(300-W train+)", "dlib pretrained 68 (reference)", str(reference["nme"]),
                    f"{100 * reference['fr']:.1f}", f"{reference['auc']:.3f}", "", f"{reference['faces_per_s']:.0f}",
                    "", "")
    Console(width=220).print(tab)
    print("paired differences: a - b in NME points (positive: b is better); 95% face-bootstrap intervals; "
          "an interval across 0 is a tie")


def _plain(v: dict) -> dict:
    return {kk: (vars(vv) if kk == "nme" else vv) for kk, vv in v.items() if kk != "per_face"}


def _save(rows, reference, out: Path, args: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = [{"n": r["n"], "steps": r["steps"], "refine": r["refine"],
             "diffs": {k: vars(d) for k, d in r["diffs"].items()},
             **{k: _plain(r[k]) for k in NAMES if k in r}} for r in rows]
    doc = {"args": args, "ert_options": ERT_OPTIONS, "two_stage_defaults": TWO_STAGE, "rows": keep,
           "dlib68_reference": _plain(reference) if reference else None}
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ns = [r["n"] for r in rows]
    for k in NAMES:
        if k not in rows[0]:
            continue
        m = np.array([r[k]["nme"].mean for r in rows])
        lo, hi = np.array([r[k]["nme"].lo for r in rows]), np.array([r[k]["nme"].hi for r in rows])
        ax.errorbar(ns, m, yerr=[m - lo, hi - m], marker="o", capsize=3, label=NAMES[k])
    if reference:
        ax.axhline(reference["nme"].mean, color="grey", ls="--", lw=1, label="dlib pretrained 68 (reference)")
    ax.set_xscale("log")
    ax.set_xlabel("real training faces")
    ax.set_ylabel("NME (inter-ocular) %, LFPW test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "nme.png", dpi=120)
    print(f"wrote {out / 'results.json'} and {out / 'nme.png'}")


if __name__ == "__main__":
    main()
