"""The pose gap as a report measure: per-angle distances and coverage (see
:mod:`gapkit.gap.pose`), one figure, the report's "Pose gap" section and its table rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gapkit.gap.figures import plt, write_png
from gapkit.gap.measure import GapContext, GapMeasure, Measured, Row
from gapkit.gap.pose import ANGLES, pose_gap


def plot_pose(pa: np.ndarray, pb: np.ndarray, pg: dict, names: tuple[str, str], path: Path) -> Path:
    """Histograms of yaw, pitch and roll of both sets, and their yaw-pitch scatter."""
    fig, axes = plt().subplots(1, 4, figsize=(16, 3.6))
    for j, (ax, angle) in enumerate(zip(axes[:3], ANGLES, strict=True)):
        a, b = pa[:, j], pb[:, j]
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        bins = np.linspace(-90, 90, 37)
        ax.hist(a, bins, density=True, alpha=0.55, label=names[0])
        ax.hist(b, bins, density=True, alpha=0.55, label=names[1])
        w = pg["angles"][angle]
        ax.set_title(f"{angle}: W1 = {w['wasserstein_deg']:.1f} deg" if w else angle, fontsize=10)
        ax.set_xlabel("degrees")
        ax.legend(fontsize=8)
    axes[3].scatter(pa[:, 0], pa[:, 1], s=5, alpha=0.5, label=names[0])
    axes[3].scatter(pb[:, 0], pb[:, 1], s=5, alpha=0.5, label=names[1])
    axes[3].set_xlabel("yaw")
    axes[3].set_ylabel("pitch")
    axes[3].set_title(f"{100 * pg['covered_share']:.0f}% of {names[1]} within {pg['caliper_deg']:.0f} deg of {names[0]}",
                      fontsize=10)
    axes[3].legend(fontsize=8)
    return write_png(path, fig)


class PoseMeasure(GapMeasure):
    """Which head poses of B have no counterpart in A (poses from the landmarks)."""

    key = "pose_gap"

    def measure(self, ctx: GapContext) -> Measured:
        pg = pose_gap(ctx.pose_a, ctx.pose_b)
        return Measured(pg, lambda out: [plot_pose(ctx.pose_a, ctx.pose_b, pg, ctx.names, out / "pose_gap.png")])

    def section(self, s: dict) -> list[str]:
        a, b, pg = s["a"]["name"], s["b"]["name"], s[self.key]
        lines = ["## Pose gap", "", f"Head pose from the landmarks (solvePnP on the eyes, nose and mouth). "
                 f"{100 * pg['covered_share']:.1f}% of {b}'s faces have a face of {a} within {pg['caliper_deg']:.0f}° "
                 "of yaw and pitch.", "", f"| angle | W1 (deg) | {a} mean ± sd | {b} mean ± sd | {a} 5-95% | {b} 5-95% |",
                 "|---|---|---|---|---|---|"]
        for angle, v in pg["angles"].items():
            if v:
                lines.append(f"| {angle} | {v['wasserstein_deg']:.1f} | {v['a']['mean']:.1f} ± {v['a']['sd']:.1f} | "
                             f"{v['b']['mean']:.1f} ± {v['b']['sd']:.1f} | {v['a']['p5']:.0f} to {v['a']['p95']:.0f} | "
                             f"{v['b']['p5']:.0f} to {v['b']['p95']:.0f} |")
        if pg["thin_yaw_bins"]:
            lines += ["", f"Yaw ranges where {a} is thin (under a third of {b}'s share): "
                      + ", ".join(f"{t['yaw_from']:.0f}° to {t['yaw_to']:.0f}° ({100 * t['share_a']:.1f}% vs "
                                  f"{100 * t['share_b']:.1f}%)" for t in pg["thin_yaw_bins"]) + "."]
        return lines + ["", "![pose gap](pose_gap.png)", ""]

    def rows(self, s: dict) -> list[Row]:
        a, b, pg = s["a"]["name"], s["b"]["name"], s[self.key]
        rows: list[Row] = [("pose", f"{angle} Wasserstein", f"{v['wasserstein_deg']:.1f} deg")
                           for angle, v in pg["angles"].items() if v]
        rows.append(("pose", f"{b} faces with a face of {a} within {pg['caliper_deg']:.0f} deg",
                     f"{100 * pg['covered_share']:.1f}%"))
        return rows
