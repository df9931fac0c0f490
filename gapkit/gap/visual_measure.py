"""The visual gap as a report measure: image statistics and a domain classifier on face crops
(see :mod:`gapkit.gap.visual`), one figure, the report's "Visual gap" section and its table rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from gapkit.gap.figures import plt, write_png
from gapkit.gap.measure import GapContext, GapMeasure, Measured, Row
from gapkit.gap.visual import (
    STATS,
    backbone_features,
    face_crops,
    handcrafted_features,
    image_stats,
    visual_gap,
)


def plot_visual(sa: np.ndarray, sb: np.ndarray, fa: np.ndarray, fb: np.ndarray, vg: dict, names: tuple[str, str],
                path: Path) -> Path:
    """Histograms of the image statistics of both sets, and their features in a shared PCA plane."""
    fig, axes = plt().subplots(2, 4, figsize=(16, 7))
    for j, (ax, stat) in enumerate(zip(axes.ravel()[:7], STATS, strict=True)):
        lo, hi = np.percentile(np.r_[sa[:, j], sb[:, j]], [0.5, 99.5])
        bins = np.linspace(lo, hi + 1e-9, 30)
        ax.hist(sa[:, j], bins, density=True, alpha=0.55, label=names[0])
        ax.hist(sb[:, j], bins, density=True, alpha=0.55, label=names[1])
        ax.set_title(f"{stat}: W1 = {vg['stats'][stat]['wasserstein_sd']:.2f} sd", fontsize=10)
        ax.legend(fontsize=7)
    ax = axes.ravel()[7]
    z = PCA(2, random_state=0).fit_transform(StandardScaler().fit_transform(np.concatenate([fa, fb])))
    ax.scatter(z[:len(fa), 0], z[:len(fa), 1], s=5, alpha=0.5, label=names[0])
    ax.scatter(z[len(fa):, 0], z[len(fa):, 1], s=5, alpha=0.5, label=names[1])
    ax.set_title(f"{vg['features']} features, PCA\ndomain AUC {vg['domain_auc']:.3f}", fontsize=10)
    ax.legend(fontsize=7)
    return write_png(path, fig)


class VisualMeasure(GapMeasure):
    """How different the faces look (it reads every image; off with ``GapOptions.visual``)."""

    key = "visual_gap"

    def measure(self, ctx: GapContext) -> Measured | None:
        opt = ctx.options
        if not opt.visual:
            return None
        ctx.log("visual gap: cropping faces")
        ca, _, pa_bad = face_crops(ctx.a, opt.crop_size, progress=ctx.progress)
        cb, _, pb_bad = face_crops(ctx.b, opt.crop_size, progress=ctx.progress)
        ctx.problems += pa_bad + pb_bad
        if min(len(ca), len(cb)) < 5:
            return Measured({"skipped": "fewer than 5 readable images on one side"})
        sa = np.stack([image_stats(c) for c in ca])
        sb = np.stack([image_stats(c) for c in cb])
        if opt.backbone:
            kind = f"backbone {Path(opt.backbone).name}"
            fa, fb = (backbone_features(c, opt.backbone, opt.device) for c in (ca, cb))
        else:
            kind = "handcrafted"
            fa, fb = handcrafted_features(ca), handcrafted_features(cb)
        ctx.log("visual gap: domain classifier")
        vg = visual_gap(sa, sb, fa, fb, kind, opt.seed)
        return Measured(vg, lambda out: [plot_visual(sa, sb, fa, fb, vg, ctx.names, out / "visual_gap.png")])

    def section(self, s: dict) -> list[str]:
        a, b, vg = s["a"]["name"], s["b"]["name"], s.get(self.key)
        if not vg:
            return []
        if "stats" not in vg:
            return ["## Visual gap", "", f"Not measured: {vg['skipped']}.", ""]
        lines = ["## Visual gap", "", f"Face crops, {vg['features']} features. A cross-validated logistic-regression "
                 f"domain classifier separates the sets with **AUC {vg['domain_auc']:.3f}** (0.5: they look alike); "
                 f"Fréchet distance {vg['frechet']:.1f}.", "", f"| statistic | {a} mean | {b} mean | W1 (pooled sd) |",
                 "|---|---|---|---|"]
        for k, v in vg["stats"].items():
            lines.append(f"| {k} | {v['a_mean']:.2f} | {v['b_mean']:.2f} | {v['wasserstein_sd']:.2f} |")
        return lines + ["", "![visual gap](visual_gap.png)", ""]

    def rows(self, s: dict) -> list[Row]:
        vg = s.get(self.key)
        if not (vg and "domain_auc" in vg):
            return []
        return [("visual", f"domain-classifier AUC ({vg['features']})", f"{vg['domain_auc']:.3f}"),
                ("visual", "Fréchet distance", f"{vg['frechet']:.1f}")]
