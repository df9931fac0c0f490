"""`gapkit gap report`: label, pose and visual gaps between face sets A and B, as numbers
(``gap.json``), a readable ``report.md`` and PNG figures.

A is typically synthetic and B real. B's scheme is the common one: A is brought to it by the
deterministic mapping (``before``) and, with an adapter, by the adapter (``after``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gapkit.adapt import LabelAdapter, one_scheme
from gapkit.errors import GapkitError, InputError, NoMappingError, OutputExistsError, Problem
from gapkit.faceset import DataSource, load
from gapkit.files import atomic_open, atomic_write_text
from gapkit.gap.label import LabelGap, label_gap
from gapkit.gap.pose import ANGLES, pose_gap
from gapkit.gap.visual import (
    STATS,
    backbone_features,
    face_crops,
    handcrafted_features,
    image_stats,
    visual_gap,
)
from gapkit.pose import records_pose
from gapkit.records import FaceRecord
from gapkit.schemes import find_mapper, get_scheme
from gapkit.settings import Settings

Log = Callable[[str], None]


class GapOptions(Settings):
    adapter: Path | None = None
    backbone: Path | None = None
    visual: bool = True
    crop_size: int = 64
    max_faces: int | None = None
    seed: int = 0
    device: str = "cpu"


@dataclass
class GapResult:
    summary: dict
    files: list[Path]
    problems: list[Problem] = field(default_factory=list)


def _load(src: str | Path, fmt: str | None, splits: list[str] | None, max_faces: int | None, seed: int,
          side: str) -> tuple[list[FaceRecord], list[Problem]]:
    faces, rep = load(DataSource(path=Path(src), format=fmt, splits=splits))
    if not len(faces):
        raise InputError(f"set {side} ({src}) has no usable face records"
                         + (f"; {len(rep.problems)} were bad, first: {rep.problems[0]}" if rep.problems else ""))
    return faces.subset(max_faces, [seed, ord(side)]).records, list(rep.problems)


def _fig_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _write_png(path: Path, fig) -> Path:
    data = _fig_bytes(fig)
    with atomic_open(path, "wb", overwrite=True) as f:
        f.write(data)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_face(ax, shape: np.ndarray, scheme, **kw) -> None:
    for i, j in scheme.edges():
        ax.plot(shape[[i, j], 0], shape[[i, j], 1], **kw)


def plot_label_gap(gaps: dict[str, LabelGap], names: tuple[str, str], path: Path) -> Path:
    """Arrows from B's mean face to A's pose-matched mean, one panel per stage, same scale."""
    plt = _plt()
    first = next(iter(gaps.values()))
    scheme = get_scheme(first.scheme)
    top = max(float(np.nanmax(g.magnitude)) for g in gaps.values())
    gain = 0.15 / max(top / 100, 1e-9)  # the longest arrow spans 0.15 normaliser units
    fig, axes = plt.subplots(1, len(gaps), figsize=(5.2 * len(gaps), 5.6), squeeze=False,
                             layout="constrained")
    for ax, (stage, g) in zip(axes[0], gaps.items(), strict=True):
        ref, off, mag = g.reference, g.offsets / 100, g.magnitude
        _draw_face(ax, ref, scheme, color="0.7", lw=1)
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
    return _write_png(path, fig)


def plot_points(gaps: dict[str, LabelGap], path: Path) -> Path:
    plt = _plt()
    first = next(iter(gaps.values()))
    scheme = get_scheme(first.scheme)
    fig, ax = plt.subplots(figsize=(11, 3.6))
    width = 0.8 / len(gaps)
    cmap = plt.get_cmap("tab10")
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
    return _write_png(path, fig)


def plot_modes(g: LabelGap, path: Path) -> Path:
    plt = _plt()
    scheme = get_scheme(g.scheme)
    fig, axes = plt.subplots(1, max(len(g.modes), 1), figsize=(4.2 * max(len(g.modes), 1), 4.6), squeeze=False,
                             layout="constrained")
    for ax, m in zip(axes[0], g.modes, strict=False):
        d = np.asarray(m["direction"]) * m["sd_pct"] / 100 * 2
        _draw_face(ax, g.reference, scheme, color="0.6", lw=1)
        _draw_face(ax, g.reference - d, scheme, color="tab:blue", lw=1)
        _draw_face(ax, g.reference + d, scheme, color="tab:red", lw=1)
        ax.set_title(f"mode {m['mode'] + 1}: {100 * m['explained']:.1f}% of variance, r(yaw) {m['yaw_r']:+.2f}\n"
                     f"A - B = {m['effect_size']:+.2f} sd (red: +2 sd)", fontsize=9)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.axis("off")
    fig.suptitle("Shape modes that separate the sets most (PCA of aligned shapes, pose regressed out "
                 "within each set)", fontsize=10)
    return _write_png(path, fig)


def plot_pose_bins(g: LabelGap, names: tuple[str, str], path: Path) -> Path:
    """The gap per yaw bin, under each set's faces, with 95% intervals."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
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
    return _write_png(path, fig)


def plot_pose(pa: np.ndarray, pb: np.ndarray, pg: dict, names: tuple[str, str], path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
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
    return _write_png(path, fig)


def plot_visual(sa: np.ndarray, sb: np.ndarray, fa: np.ndarray, fb: np.ndarray, vg: dict, names: tuple[str, str],
                path: Path) -> Path:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    plt = _plt()
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
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
    return _write_png(path, fig)


def _prepare_a(a_recs: list[FaceRecord], b_scheme: str, adapter: LabelAdapter | None,
               problems: list[Problem]) -> dict[str, np.ndarray]:
    a_scheme = one_scheme(a_recs, "A")
    pts = np.stack([r.points for r in a_recs])
    stages: dict[str, np.ndarray] = {}
    try:
        mapper = find_mapper(a_scheme, b_scheme)
        stages["before" if adapter else "mapped"] = mapper(pts)
    except NoMappingError:
        if adapter is None:
            raise GapkitError(f"A's scheme {a_scheme} has no mapping to B's {b_scheme}; pass --adapter") from None
    if adapter is not None:
        if (adapter.source.name, adapter.target.name) != (a_scheme, b_scheme):
            raise GapkitError(f"the adapter maps {adapter.source.name} -> {adapter.target.name}, but A is {a_scheme} "
                              f"and B is {b_scheme}")
        stages["after adapter"], _, bad = adapter.predict_records(a_recs)
        problems += bad  # faces whose image a refinement stage could not read keep the shape answer
    return stages


def gap_report(a_src: str | Path, b_src: str | Path, out: str | Path, *, a_fmt: str | None = None,
               b_fmt: str | None = None, a_splits: list[str] | None = None, b_splits: list[str] | None = None,
               names: tuple[str, str] = ("A", "B"), options: GapOptions | None = None, overwrite: bool = False,
               log: Log = lambda s: None, progress: Callable[[int], None] | None = None) -> GapResult:
    """Measure the three gaps between A and B and write them under ``out``."""
    opt = options or GapOptions()
    out = Path(out)
    if (out / "gap.json").exists() and not overwrite:
        raise OutputExistsError(f"{out} already holds a gap report; pass --overwrite to replace it")
    a_recs, a_bad = _load(a_src, a_fmt, a_splits, opt.max_faces, opt.seed, "A")
    b_recs, b_bad = _load(b_src, b_fmt, b_splits, opt.max_faces, opt.seed, "B")
    b_scheme = one_scheme(b_recs, "B")
    scheme = get_scheme(b_scheme)
    adapter = LabelAdapter.load(opt.adapter).to(opt.device) if opt.adapter else None
    adapt_bad: list[Problem] = []
    stages = _prepare_a(a_recs, b_scheme, adapter, adapt_bad)
    b_pts = np.stack([r.points for r in b_recs])

    log(f"pose of {len(a_recs)} + {len(b_recs)} faces")
    pose_a = records_pose(a_recs)
    pose_b = records_pose(b_recs)
    log("label gap")
    b_ref = None
    gaps: dict[str, LabelGap] = {}
    for stage, pts in stages.items():
        gaps[stage] = label_gap(pts, b_pts, scheme, pose_a, pose_b, reference=b_ref, seed=opt.seed)
        b_ref = gaps[stage].reference  # one frame for every stage
    pg = pose_gap(pose_a, pose_b)

    files: list[Path] = []
    summary: dict = {
        "a": {"source": str(a_src), "name": names[0], "n": len(a_recs), "scheme": a_recs[0].scheme,
              "skipped": len(a_bad)},
        "b": {"source": str(b_src), "name": names[1], "n": len(b_recs), "scheme": b_scheme, "skipped": len(b_bad)},
        "adapter": str(opt.adapter) if opt.adapter else None,
        "label_gap": {k: g.to_dict() for k, g in gaps.items()},
        "pose_gap": pg,
    }
    out.mkdir(parents=True, exist_ok=True)
    files.append(plot_label_gap(gaps, names, out / "label_gap.png"))
    files.append(plot_points(gaps, out / "label_gap_points.png"))
    files.append(plot_modes(gaps[list(gaps)[-1]], out / "label_modes.png"))
    files.append(plot_pose_bins(gaps[list(gaps)[-1]], names, out / "label_gap_pose_bins.png"))
    files.append(plot_pose(pose_a, pose_b, pg, names, out / "pose_gap.png"))

    problems = a_bad + b_bad + adapt_bad
    if opt.visual:
        log("visual gap: cropping faces")
        ca, _, pa_bad = face_crops(a_recs, opt.crop_size, progress=progress)
        cb, _, pb_bad = face_crops(b_recs, opt.crop_size, progress=progress)
        problems += pa_bad + pb_bad
        if min(len(ca), len(cb)) < 5:
            summary["visual_gap"] = {"skipped": "fewer than 5 readable images on one side"}
        else:
            sa = np.stack([image_stats(c) for c in ca])
            sb = np.stack([image_stats(c) for c in cb])
            if opt.backbone:
                kind = f"backbone {Path(opt.backbone).name}"
                fa, fb = (backbone_features(c, opt.backbone, opt.device) for c in (ca, cb))
            else:
                kind = "handcrafted"
                fa, fb = handcrafted_features(ca), handcrafted_features(cb)
            log("visual gap: domain classifier")
            vg = visual_gap(sa, sb, fa, fb, kind, opt.seed)
            summary["visual_gap"] = vg
            files.append(plot_visual(sa, sb, fa, fb, vg, names, out / "visual_gap.png"))
    summary["problems"] = [p.to_dict() for p in problems]
    atomic_write_text(out / "gap.json", json.dumps(_clean(summary), indent=1, allow_nan=False) + "\n", overwrite=True)
    files.append(out / "gap.json")
    atomic_write_text(out / "report.md", markdown(summary), overwrite=True)
    files.append(out / "report.md")
    return GapResult(summary, files, problems)


def _clean(v):
    """JSON-safe: NaN and infinity become null."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _fmt(v: float | None, unit: str = "", digits: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}{unit}"


def markdown(s: dict) -> str:
    """The report: headline table, then what each number says."""
    a, b = s["a"]["name"], s["b"]["name"]
    lines = [f"# Gap report: {a} against {b}", "",
             f"- {a}: `{s['a']['source']}`, {s['a']['n']} faces ({s['a']['scheme']}), {s['a']['skipped']} skipped",
             f"- {b}: `{s['b']['source']}`, {s['b']['n']} faces ({s['b']['scheme']}), {s['b']['skipped']} skipped", ""]
    norm = next(iter(s["label_gap"].values()))["normaliser"]
    lines += ["## Label gap", "",
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
    for stage, g in s["label_gap"].items():
        top = max(g["groups_pct"], key=g["groups_pct"].get)
        am = g["by_pose_mix"]["A"]
        lines.append(f"| {stage} | {_fmt(g['estimate_pct'], '%')} ({_fmt(g['ci95_pct'][0])}-{_fmt(g['ci95_pct'][1])}) "
                     f"| {_fmt(g['noise_floor_pct'], '%')} | {_fmt(am['estimate_pct'], '%')} ({_fmt(am['ci95_pct'][0])}-"
                     f"{_fmt(am['ci95_pct'][1])}; {100 * am['matched_share']:.0f}% of {a} matched) "
                     f"| {_fmt(g['max_pct'], '%')} | {_fmt(g['raw_mean_pct'], '%')} | {top} "
                     f"{_fmt(g['groups_pct'][top], '%')} | {_fmt(g['frechet'], '', 1)} | {g['mmd2']:.4f} ({g['mmd_p']:.3f}) |")
    last = list(s["label_gap"].values())[-1]
    mixes = last["by_pose_mix"]
    lines += ["", "Per group (% of the normaliser; last stage under each mix):", "",
              "| group | " + " | ".join(f"{k} ({b}'s mix)" for k in s["label_gap"]) + f" | {a}'s mix |",
              "|---|" + "---|" * (len(s["label_gap"]) + 1)]
    for grp in last["groups_pct"]:
        lines.append(f"| {grp} | " + " | ".join(_fmt(g["groups_pct"][grp], "%") for g in s["label_gap"].values())
                     + f" | {_fmt(mixes['A']['groups_pct'].get(grp), '%')} |")
    lines += ["", "Per yaw bin of the face (last stage; each row: that bin's faces of one set against their "
              "pose neighbours in the other; bins with fewer than 5 matched faces are n/a):", "",
              f"| yaw | {b} faces | gap (95% CI) | {a} faces | gap (95% CI) |", "|---|---|---|---|---|"]
    for row in last["pose_bins"]:
        cells = []
        for side in ("B", "A"):
            v = row[side]
            cells += [str(v["n"]), f"{_fmt(v['estimate_pct'], '%')} ({_fmt(v['ci95_pct'][0])}-{_fmt(v['ci95_pct'][1])})"
                      if v["estimate_pct"] is not None else "n/a"]
        lines.append(f"| {row['yaw_from']:.0f}° to {row['yaw_to']:.0f}° | " + " | ".join(cells) + " |")
    names_idx = [f"{n} (#{i})" for n, i in zip(last["largest_point_names"], last["largest_points"], strict=False)]
    lines += ["", f"Largest offsets ({b}'s mix; points by name, #index counted from 0): {', '.join(names_idx[:5])}.", "",
              "Modes that separate the sets most (PCA of aligned shapes after the pose is regressed out within "
              "each set, so they carry no yaw: r is their correlation with yaw): "
              + "; ".join(f"mode {m['mode'] + 1} ({100 * m['explained']:.1f}% of variance) {m['effect_size']:+.2f} sd, "
                          f"r(yaw) {m['yaw_r']:+.2f}" for m in last["modes"]) + ".", "",
              "![label gap](label_gap.png)", "", "![per point](label_gap_points.png)", "",
              "![per yaw bin](label_gap_pose_bins.png)", "", "![modes](label_modes.png)", ""]
    pg = s["pose_gap"]
    lines += ["## Pose gap", "", f"Head pose from the landmarks (solvePnP on the eyes, nose and mouth). "
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
    lines += ["", "![pose gap](pose_gap.png)", ""]
    vg = s.get("visual_gap")
    if vg and "stats" in vg:
        lines += ["## Visual gap", "", f"Face crops, {vg['features']} features. A cross-validated logistic-regression "
                  f"domain classifier separates the sets with **AUC {vg['domain_auc']:.3f}** (0.5: they look alike); "
                  f"Fréchet distance {vg['frechet']:.1f}.", "", f"| statistic | {a} mean | {b} mean | W1 (pooled sd) |",
                  "|---|---|---|---|"]
        for k, v in vg["stats"].items():
            lines.append(f"| {k} | {v['a_mean']:.2f} | {v['b_mean']:.2f} | {v['wasserstein_sd']:.2f} |")
        lines += ["", "![visual gap](visual_gap.png)", ""]
    elif vg:
        lines += ["## Visual gap", "", f"Not measured: {vg['skipped']}.", ""]
    if s["problems"]:
        lines += ["## Skipped input", ""] + [f"- `{p['path']}`{':' + str(p['line']) if p['line'] else ''}: {p['reason']}"
                                             for p in s["problems"][:50]]
        if len(s["problems"]) > 50:
            lines.append(f"- ... and {len(s['problems']) - 50} more (gap.json)")
    return "\n".join(lines) + "\n"
