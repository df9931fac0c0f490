"""The label gap as a report measure: pose-matched offsets per stage of A's points (see
:mod:`gapkit.gap.label`), four figures, the report's "Label gap" section and its table rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gapkit.gap.figures import draw_face, plt, write_png
from gapkit.gap.label import LabelGap, label_gap
from gapkit.gap.measure import GapContext, GapMeasure, Measured, Row, fmt
from gapkit.schemes import get_scheme


def plot_label_gap(gaps: dict[str, LabelGap], names: tuple[str, str], path: Path) -> Path:
    """Arrows from B's mean face to A's pose-matched mean, one panel per stage, same scale."""
    pyplot = plt()
    first = next(iter(gaps.values()))
    scheme = get_scheme(first.scheme)
    top = max(float(np.nanmax(g.magnitude)) for g in gaps.values())
    gain = 0.15 / max(top / 100, 1e-9)  # the longest arrow spans 0.15 normaliser units
    fig, axes = pyplot.subplots(1, len(gaps), figsize=(5.2 * len(gaps), 5.6), squeeze=False,
                                layout="constrained")
    for ax, (stage, g) in zip(axes[0], gaps.items(), strict=True):
        ref, off, mag = g.reference, g.offsets / 100, g.magnitude
        draw_face(ax, ref, scheme, color="0.7", lw=1)
        ax.quiver(ref[:, 0], ref[:, 1], off[:, 0] * gain, off[:, 1] * gain, mag, angles="xy", scale_units="xy",
                  scale=1, cmap="inferno_r", clim=(0, top), width=0.006)
        sc = ax.scatter(ref[:, 0], ref[:, 1], c=mag, cmap="inferno_r", vmin=0, vmax=top, s=14, zorder=3)
        ax.set_title(f"{stage}: mean {g.estimate_pct:.2f}% [{g.ci95[0]:.2f}, {g.ci95[1]:.2f}], floor {g.noise_floor:.2f}%\n"
                     f"max {np.nanmax(mag):.2f}%, arrows x{gain:.0f}", fontsize=10)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.axis("off")
    fig.colorbar(sc, ax=axes[0].tolist(), shrink=0.7, label=f"|{names[0]} - {names[1]}|, % {first.normaliser}")
    fig.suptitle(f"Label gap, pose-matched, under {names[1]}'s pose mix\n{names[0]} points against {names[1]}'s",
                 fontsize=11)
    return write_png(path, fig)


def plot_points(gaps: dict[str, LabelGap], path: Path) -> Path:
    """The offset of every point, one bar per stage, coloured by group; the largest named."""
    pyplot = plt()
    first = next(iter(gaps.values()))
    scheme = get_scheme(first.scheme)
    fig, ax = pyplot.subplots(figsize=(11, 3.6))
    width = 0.8 / len(gaps)
    cmap = pyplot.get_cmap("tab10")
    group_of = {i: g for g, idx in scheme.groups.items() for i in idx}
    names = list(scheme.groups)
    for s, (stage, g) in enumerate(gaps.items()):
        x = np.arange(scheme.num_points) + s * width
        colours = [cmap(names.index(group_of[i]) % 10) if i in group_of else "0.5" for i in range(scheme.num_points)]
        ax.bar(x, g.magnitude, width, color=colours, alpha=1.0 if s == 0 else 0.45,
               edgecolor="k" if s else None, linewidth=0.4)
        if len(gaps) > 1:  # legend swatch for the stage, in grey
            ax.bar([0], [0], color="0.4", alpha=1.0 if s == 0 else 0.45, edgecolor="k" if s else None, label=stage)
    for n in names:
        ax.bar([0], [0], color=cmap(names.index(n) % 10), label=n)
    last = list(gaps.values())[-1]
    for i in np.argsort(-np.nan_to_num(last.magnitude))[:5]:  # the largest, by name
        ax.annotate(f"{scheme.points[i]} (#{i})", (i, last.magnitude[i]), textcoords="offset points", xytext=(0, 3),
                    ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_ylim(0, 1.6 * float(np.nanmax(last.magnitude)))
    ax.set_xlabel(f"{scheme.name} point index (0-based; names in the report)")
    ax.set_ylabel(f"offset, % {first.normaliser}")
    ax.legend(fontsize=7, ncol=6, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    return write_png(path, fig)


def plot_modes(g: LabelGap, path: Path) -> Path:
    """The shape modes that separate the sets most, each at -2 and +2 sd around B's mean face."""
    pyplot = plt()
    scheme = get_scheme(g.scheme)
    fig, axes = pyplot.subplots(1, max(len(g.modes), 1), figsize=(4.2 * max(len(g.modes), 1), 4.6), squeeze=False,
                                layout="constrained")
    for ax, m in zip(axes[0], g.modes, strict=False):
        d = np.asarray(m["direction"]) * m["sd_pct"] / 100 * 2
        draw_face(ax, g.reference, scheme, color="0.6", lw=1)
        draw_face(ax, g.reference - d, scheme, color="tab:blue", lw=1)
        draw_face(ax, g.reference + d, scheme, color="tab:red", lw=1)
        ax.set_title(f"mode {m['mode'] + 1}: {100 * m['explained']:.1f}% of variance, r(yaw) {m['yaw_r']:+.2f}\n"
                     f"A - B = {m['effect_size']:+.2f} sd (red: +2 sd)", fontsize=9)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.axis("off")
    fig.suptitle("Shape modes that separate the sets most (PCA of aligned shapes, pose regressed out "
                 "within each set)", fontsize=10)
    return write_png(path, fig)


def plot_pose_bins(g: LabelGap, names: tuple[str, str], path: Path) -> Path:
    """The gap per yaw bin, under each set's faces, with 95% intervals."""
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(7, 3.6))
    for k, (side, label) in enumerate((("B", f"{names[1]}'s faces"), ("A", f"{names[0]}'s faces"))):
        xs, ys, lo, hi = [], [], [], []
        for j, row in enumerate(g.pose_bins):
            v = row[side]
            if v.get("estimate_pct") is not None:
                xs.append(j + (k - 0.5) * 0.2)
                ys.append(v["estimate_pct"])
                lo.append(v["estimate_pct"] - v["ci95_pct"][0])
                hi.append(v["ci95_pct"][1] - v["estimate_pct"])
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=label)
    ax.set_xticks(range(len(g.pose_bins)), [f"{r['yaw_from']:.0f} to {r['yaw_to']:.0f}" for r in g.pose_bins])
    ax.set_xlabel("yaw of the face, degrees")
    ax.set_ylabel(f"label gap, % {g.normaliser}")
    ax.set_title("Label gap per yaw bin (95% CI); bins with fewer than 5 matched faces left out", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return write_png(path, fig)


def _draw(gaps: dict[str, LabelGap], names: tuple[str, str], out: Path) -> list[Path]:
    last = gaps[list(gaps)[-1]]
    return [plot_label_gap(gaps, names, out / "label_gap.png"), plot_points(gaps, out / "label_gap_points.png"),
            plot_modes(last, out / "label_modes.png"),
            plot_pose_bins(last, names, out / "label_gap_pose_bins.png")]


def _intro(a: str, b: str, norm: str) -> list[str]:
    return ["## Label gap", "",
            f"Offsets of {a}'s points from {b}'s after Procrustes alignment on the inner points, in % of the "
            f"{norm} distance. *Pose-matched*: each {b} face is compared with the {a} faces of nearly the same "
            "yaw and pitch, so a difference in pose mix does not pass for a labelling difference.", "",
            f"**The headline is weighted by {b}'s pose mix**: it averages over {b}'s faces. A gap that grows with "
            f"yaw reads larger under a mix with more profile faces, so the same is given under {a}'s pose mix "
            f"(each {a} face against its {b} neighbours) and per yaw bin below. Two reports with different "
            f"{b} sets compare at the same weighting only per bin.", "",
            "The noise floor is what the mean offset reaches with no offset at all (95th percentile, "
            "per-face differences sign-flipped): a gap at or under it is zero within what these faces can show.",
            "", f"| stage | under {b}'s pose mix (95% CI) | noise floor | under {a}'s pose mix (95% CI) | max | "
            "unmatched mean | largest group | Fréchet | MMD² (p) |",
            "|---|---|---|---|---|---|---|---|---|"]


def _stage_row(stage: str, g: dict, a: str) -> str:
    top = max(g["groups_pct"], key=g["groups_pct"].get)
    am = g["by_pose_mix"]["A"]
    return (f"| {stage} | {fmt(g['estimate_pct'], '%')} ({fmt(g['ci95_pct'][0])}-{fmt(g['ci95_pct'][1])}) "
            f"| {fmt(g['noise_floor_pct'], '%')} | {fmt(am['estimate_pct'], '%')} ({fmt(am['ci95_pct'][0])}-"
            f"{fmt(am['ci95_pct'][1])}; {100 * am['matched_share']:.0f}% of {a} matched) "
            f"| {fmt(g['max_pct'], '%')} | {fmt(g['raw_mean_pct'], '%')} | {top} "
            f"{fmt(g['groups_pct'][top], '%')} | {fmt(g['frechet'], '', 1)} | {g['mmd2']:.4f} ({g['mmd_p']:.3f}) |")


def _group_table(lg: dict, a: str, b: str) -> list[str]:
    last = list(lg.values())[-1]
    mixes = last["by_pose_mix"]
    lines = ["", "Per group (% of the normaliser; last stage under each mix):", "",
             "| group | " + " | ".join(f"{k} ({b}'s mix)" for k in lg) + f" | {a}'s mix |",
             "|---|" + "---|" * (len(lg) + 1)]
    for grp in last["groups_pct"]:
        lines.append(f"| {grp} | " + " | ".join(fmt(g["groups_pct"][grp], "%") for g in lg.values())
                     + f" | {fmt(mixes['A']['groups_pct'].get(grp), '%')} |")
    return lines


def _bin_table(last: dict, a: str, b: str) -> list[str]:
    lines = ["", "Per yaw bin of the face (last stage; each row: that bin's faces of one set against their "
             "pose neighbours in the other; bins with fewer than 5 matched faces are n/a):", "",
             f"| yaw | {b} faces | gap (95% CI) | {a} faces | gap (95% CI) |", "|---|---|---|---|---|"]
    for row in last["pose_bins"]:
        cells = []
        for side in ("B", "A"):
            v = row[side]
            cells += [str(v["n"]), f"{fmt(v['estimate_pct'], '%')} ({fmt(v['ci95_pct'][0])}-{fmt(v['ci95_pct'][1])})"
                      if v["estimate_pct"] is not None else "n/a"]
        lines.append(f"| {row['yaw_from']:.0f}° to {row['yaw_to']:.0f}° | " + " | ".join(cells) + " |")
    return lines


def _points_and_modes(last: dict, b: str) -> list[str]:
    names_idx = [f"{n} (#{i})" for n, i in zip(last["largest_point_names"], last["largest_points"], strict=False)]
    return ["", f"Largest offsets ({b}'s mix; points by name, #index counted from 0): {', '.join(names_idx[:5])}.", "",
            "Modes that separate the sets most (PCA of aligned shapes after the pose is regressed out within "
            "each set, so they carry no yaw: r is their correlation with yaw): "
            + "; ".join(f"mode {m['mode'] + 1} ({100 * m['explained']:.1f}% of variance) {m['effect_size']:+.2f} sd, "
                        f"r(yaw) {m['yaw_r']:+.2f}" for m in last["modes"]) + ".", "",
            "![label gap](label_gap.png)", "", "![per point](label_gap_points.png)", "",
            "![per yaw bin](label_gap_pose_bins.png)", "", "![modes](label_modes.png)", ""]


class LabelMeasure(GapMeasure):
    """Where A's points sit against B's, pose-matched, per stage of A (one frame for all stages)."""

    key = "label_gap"

    def measure(self, ctx: GapContext) -> Measured:
        ctx.log("label gap")
        b_ref = None
        gaps: dict[str, LabelGap] = {}
        for stage, pts in ctx.stages.items():
            gaps[stage] = label_gap(pts, ctx.b_points, ctx.scheme, ctx.pose_a, ctx.pose_b, reference=b_ref,
                                    seed=ctx.options.seed)
            b_ref = gaps[stage].reference  # one frame for every stage
        return Measured({k: g.to_dict() for k, g in gaps.items()}, lambda out: _draw(gaps, ctx.names, out))

    def section(self, s: dict) -> list[str]:
        a, b, lg = s["a"]["name"], s["b"]["name"], s[self.key]
        lines = _intro(a, b, next(iter(lg.values()))["normaliser"])
        lines += [_stage_row(stage, g, a) for stage, g in lg.items()]
        last = list(lg.values())[-1]
        return lines + _group_table(lg, a, b) + _bin_table(last, a, b) + _points_and_modes(last, b)

    def rows(self, s: dict) -> list[Row]:
        a, b = s["a"]["name"], s["b"]["name"]
        rows: list[Row] = []
        for stage, g in s[self.key].items():
            top = max(g["groups_pct"], key=g["groups_pct"].get)
            am = g["by_pose_mix"]["A"]
            rows.append((f"label ({stage})", f"pose-matched mean offset under {b}'s pose mix, % {g['normaliser']}",
                         f"{g['estimate_pct']:.2f}% [{g['ci95_pct'][0]:.2f}, {g['ci95_pct'][1]:.2f}]"))
            if am["estimate_pct"] is not None:
                rows.append(("", f"the same under {a}'s pose mix",
                             f"{am['estimate_pct']:.2f}% [{am['ci95_pct'][0]:.2f}, {am['ci95_pct'][1]:.2f}]"))
            rows.append(("", "noise floor (no offset at all)", f"{g['noise_floor_pct']:.2f}%"))
            rows.append(("", "largest group", f"{top} {g['groups_pct'][top]:.2f}%"))
        return rows
