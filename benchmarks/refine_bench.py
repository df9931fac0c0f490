"""Shape-only against image-refined label adapters, and dlib's 68-point model, on LFPW test.

Pairs: MediaPipe FaceMesh on the whole 300-W real pool (``examples/real_pairs_mediapipe.py``)
against the 300-W labels. For each training size (nested seeded subsets of the training faces;
LFPW test is never fitted on, selected on or stopped on) the script fits the shape adapter and
then its image refinement (``LabelAdapter.fit_images``), timing each, and scores both on the
LFPW test faces. The anchor, dlib's pretrained 68-point model (trained on the 300-W training
sets), runs in a side environment (``--dlib-python``; ``pip install dlib-bin numpy
face-recognition-models``) on dlib's own face detections. With ``--ert``, dlib's ERT trainer
(``ert_dlib.py``, the options of ``detector_vs_ert.py``) is also trained on each size's training
faces and their 300-W labels, started from the box around MediaPipe's points (the same input
the adapter has): the anchor "the same trainer on the same faces". Prints NME(inter_ocular)
with 95% face-bootstrap intervals, the NME over the jaw and over the other points, the paired
differences, fit seconds and apply faces/s, and writes ``results.json``, ``ced.png`` and
``overlays.png`` under ``--out``.

    make refine-bench     # both side environments, the pairs, then this script; or by hand:
    python examples/real_pairs_mediapipe.py ../shared/data/300w ../shared/data/300w_extra runs/pairs/mp468.jsonl
    python benchmarks/refine_bench.py --pairs runs/pairs/mp468.jsonl --dlib-python /path/to/dlibenv/bin/python --ert

``--shape-only`` skips the refinement (seconds); ``--depth`` gives the refined adapter MediaPipe's z.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gapkit.adapt import FitConfig, LabelAdapter, Pairs, pair_records
from gapkit.bench.stats import cell_interval, difference
from gapkit.devices import set_threads
from gapkit.faceset import load
from gapkit.metrics import point_errors, summary
from gapkit.refine import RefineConfig

from detector_vs_ert import ERT_OPTIONS
from side_process import run_side


def _verdict(d, a: str, b: str) -> str:
    return f"{b} better" if d.lo > 0 else f"{a} better" if d.hi < 0 else "tie"


def run_dlib(python: str, calibrate, test) -> dict:
    job = {"calibrate": [[r.image, list(r.landmark_box())] for r in calibrate],
           "test": [[r.image, list(r.landmark_box())] for r in test]}
    return run_side(python, "dlib68_side.py", job)


def run_ert(python: str, images: list[str], source: np.ndarray, target: np.ndarray, train_idx: np.ndarray,
            test_idx: np.ndarray, threads: int) -> dict:
    """dlib's ERT trained on ``train_idx`` faces, each face's box the extent of its source points."""
    lo, hi = np.nanmin(source, axis=1), np.nanmax(source, axis=1)
    box = np.concatenate([lo, hi], axis=1).tolist()  # [left, top, right, bottom]
    job = {"train": [[images[i], box[i], target[i].tolist()] for i in train_idx],
           "test": [[images[i], box[i]] for i in test_idx],
           "options": ERT_OPTIONS | {"num_threads": threads, "random_seed": "0"}}
    return run_side(python, "ert_dlib.py", job)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="runs/pairs/mp468.jsonl")
    ap.add_argument("--real", nargs="+", default=["../shared/data/300w", "../shared/data/300w_extra"])
    ap.add_argument("--sizes", default="50,226,1675", help="training pairs per fit (nested subsets)")
    ap.add_argument("--steps", type=int, default=RefineConfig().steps)
    ap.add_argument("--depth", action="store_true", help="the refined adapter also reads MediaPipe's z")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dlib-python", default=None)
    ap.add_argument("--ert", action="store_true", help="also train dlib's ERT on each size (needs --dlib-python)")
    ap.add_argument("--shape-only", action="store_true", help="skip the image refinement (seconds, not minutes)")
    ap.add_argument("--out", default="runs/refine-bench")
    args = ap.parse_args()
    if args.ert and not args.dlib_python:
        ap.error("--ert trains dlib's ERT in the side environment: give --dlib-python too")
    return args


@dataclass
class Pool:
    """The pairs, LFPW test (never fitted on) and the training faces in their nested order."""

    pairs: Pairs
    by_id: dict
    test_idx: np.ndarray
    order: np.ndarray        # training faces: a prefix of n is the size-n subset
    full_size: list[int]     # training faces from the 300-W folder (full images), first in order

    @classmethod
    def read(cls, pairs_file: str, real_sets: list[str]) -> Pool:
        src, _ = load(pairs_file)
        real, _ = load(real_sets)
        by_id = {r.id: r for r in real}
        pairs = pair_records(src, real)
        split = np.array([by_id[i].split for i in pairs.ids])
        train_idx, test_idx = np.flatnonzero(split == "train"), np.flatnonzero(split != "train")
        # Nested subsets: 226 = the 300-W folder's full-size training images, when that size is asked.
        order = np.random.default_rng(0).permutation(train_idx)
        full_size = [i for i in order if "300w_extra" not in pairs.images[i]]
        order = np.array(full_size + [i for i in order if "300w_extra" in pairs.images[i]])
        print(f"{len(pairs.ids)} pairs: {len(train_idx)} training faces, {len(test_idx)} LFPW test faces")
        return cls(pairs, by_id, test_idx, order, full_size)

    def records(self, idx) -> list:
        return [self.by_id[self.pairs.ids[i]] for i in idx]

    def images(self, idx) -> list[str]:
        return [self.pairs.images[i] for i in idx]


class Scores:
    """Each method's row and per-face NMEs on the test faces."""

    def __init__(self, target: np.ndarray, scheme):
        self.target, self.scheme = target, scheme
        self.rows: list[dict] = []
        self.per_face: dict[str, np.ndarray] = {}

    def __call__(self, name: str, pred: np.ndarray, **extra) -> None:
        s = summary(pred, self.target, self.scheme, per_face=True)
        self.per_face[name] = s.pop("per_face_nme")
        ci = cell_interval(self.per_face[name][None])
        # Where the error is: the outline (where labelling conventions differ) against the rest.
        e = point_errors(pred, self.target, self.scheme)
        on_jaw = np.isin(np.arange(self.scheme.num_points), self.scheme.groups["jaw"])
        jaw, other = 100 * np.nanmean(e[:, on_jaw]), 100 * np.nanmean(e[:, ~on_jaw])
        self.rows.append(dict(method=name, nme_pct=s["nme_pct"], ci=[ci.lo, ci.hi], fr=s["fr@0.08"],
                              auc=s["auc@0.08"], jaw_pct=round(jaw, 3), other_points_pct=round(other, 3), **extra))
        print(f"{name:34s} NME {ci}  FR {100 * s['fr@0.08']:.1f}%  AUC {s['auc@0.08']:.3f}  "
              f"jaw {jaw:.2f}%  other points {other:.2f}%  {extra}", flush=True)

    def differences(self) -> list[dict]:
        names = list(self.per_face)
        print("\npaired differences (row minus column, percentage points; 95% face bootstrap):")
        diffs = []
        for i, a_name in enumerate(names):
            for b_name in names[i + 1:]:
                d = difference(self.per_face[a_name][None], self.per_face[b_name][None])
                diffs.append(dict(a=a_name, b=b_name, diff=d.mean, ci=[d.lo, d.hi],
                                  verdict=_verdict(d, a_name, b_name)))
                print(f"  {a_name} - {b_name}: {d}  ({_verdict(d, a_name, b_name)})")
        return diffs


def main() -> None:
    args = _args()
    set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool = Pool.read(args.pairs, args.real)
    pairs, test_idx = pool.pairs, pool.test_idx
    scores = Scores(pairs.target[test_idx], LabelAdapter("mediapipe468", "ibug68").target)
    if args.dlib_python:
        res = run_dlib(args.dlib_python, pool.records(pool.full_size), pool.records(test_idx))
        scores("dlib 68-point model", res["pred"], faces_per_s=len(test_idx) / res["predict_s"],
               dlib_detections=int(sum(res["found"])))
    preds = {}
    for n in (int(v) for v in args.sizes.split(",")):
        got = _one_size(pool, np.sort(pool.order[:n]), args, scores, out)
        if got is not None:
            preds[n] = got
    diffs = scores.differences()
    (out / "results.json").write_text(json.dumps(
        {"rows": scores.rows, "differences": diffs,
         "per_face_nme": {k: v.tolist() for k, v in scores.per_face.items()}}, indent=1))
    _figures(out, scores.per_face, pool.records(test_idx), preds, scores.target)
    print(f"wrote {out}/results.json, ced.png, overlays.png")


def _one_size(pool: Pool, idx: np.ndarray, args: argparse.Namespace, score: Scores,
              out: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Fit and score every method on the ``idx`` training faces; the shape-only and refined
    test predictions (None with --shape-only)."""
    pairs, test_idx, n = pool.pairs, pool.test_idx, len(idx)
    z = pairs.source_depth
    if z is not None:  # the shape adapter with depth, beside the one without
        a = LabelAdapter("mediapipe468", "ibug68")
        t = time.perf_counter()
        a.fit(pairs.source[idx], pairs.target[idx], FitConfig(), source_depth=z[idx])
        score(f"shape-only + z ({a.head}), {n} pairs", a.predict(pairs.source[test_idx], z[test_idx]),
              fit_s=round(time.perf_counter() - t, 1))
    z = z if args.depth else None
    a = LabelAdapter("mediapipe468", "ibug68")
    t = time.perf_counter()
    a.fit(pairs.source[idx], pairs.target[idx], FitConfig(), source_depth=None if z is None else z[idx])
    shape_s = time.perf_counter() - t
    zt = None if z is None else z[test_idx]
    shape = a.predict(pairs.source[test_idx], zt)
    score(f"shape-only ({a.head}), {n} pairs", shape, fit_s=round(shape_s, 1))
    if args.ert:
        res = run_ert(args.dlib_python, pairs.images, pairs.source, pairs.target, idx, test_idx, args.threads)
        score(f"dlib ERT trainer, {n} pairs", res["pred"], fit_s=round(res["train_s"], 1),
              faces_per_s=round(len(test_idx) / res["predict_s"], 1))
    if args.shape_only:
        return None
    t = time.perf_counter()
    rep = a.fit_images(pairs.source[idx], pairs.target[idx], pool.images(idx), RefineConfig(steps=args.steps),
                       ids=[pairs.ids[i] for i in idx], source_depth=None if z is None else z[idx])
    refine_s = time.perf_counter() - t
    a.save(out / f"mp_{n}.gka", overwrite=True)
    t = time.perf_counter()
    pred, _, problems = a.predict_images(pairs.source[test_idx], pool.images(test_idx), source_depth=zt)
    apply_s = time.perf_counter() - t
    score(f"refined, {n} pairs", pred, fit_s=round(shape_s + refine_s, 1), kept=rep.used, how=rep.how,
          kind=rep.method, candidates=rep.candidates, val_shape=round(rep.shape_nme_pct, 3),
          val_refined=round(rep.refined_nme_pct, 3), faces_per_s=round(len(test_idx) / apply_s, 1),
          unreadable=len(problems))
    return shape, pred


def _size(name: str) -> int | None:
    """The training size in a row name ("refined, 226 pairs" -> 226); None for the anchors."""
    m = re.search(r"(\d+) pairs", name)
    return int(m.group(1)) if m else None


def _figures(out: Path, per_face: dict, test_recs, preds: dict, tgt: np.ndarray) -> None:
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gapkit.metrics import ced

    # One colour per training size; dashed shape-only, solid refined, dotted ERT. The depth
    # variants and ERT below the largest size stay in results.json, off the plot.
    sizes = sorted({n for n in map(_size, per_face) if n})
    colour = dict(zip(sizes, ["#ff9100", "#aa00ff", "#2979ff", "#00897b"], strict=False))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, e in per_face.items():
        n = _size(name)
        if "+ z" in name or ("ERT" in name and n != sizes[-1]):
            continue
        ls = "--" if "shape" in name else ":" if "ERT" in name else "-"
        x, y = ced(e)
        ax.plot(100 * x, y, ls=ls, color=colour.get(n, "black"), label=f"{name} ({100 * e.mean():.2f}%)")
    ax.set(xlabel="NME(inter_ocular) %", ylabel="share of LFPW test faces", xlim=(0, 8), ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "ced.png", dpi=120)
    plt.close(fig)
    if not preds:
        return
    n = max(preds)
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    for ax, i in zip(axes, np.linspace(0, len(test_recs) - 1, 4).astype(int), strict=True):
        r = test_recs[i]
        img = cv2.imread(r.image)[..., ::-1]
        ax.imshow(img)
        ax.plot(*tgt[i].T, "o", ms=2, color="#00c853", label="300-W label")
        ax.plot(*preds[n][0][i].T, "x", ms=3, color="#ff9100", label=f"shape-only ({n} pairs)")
        ax.plot(*preds[n][1][i].T, "+", ms=4, color="#2979ff", label=f"refined ({n} pairs)")
        x, y, w, h = r.landmark_box()
        ax.set(xlim=(x - 0.15 * w, x + 1.15 * w), ylim=(y + 1.15 * h, y - 0.15 * h))
        ax.axis("off")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "overlays.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
