"""Benchmark outputs: results.json / results.csv, report.md with the headline findings
computed from the numbers, and the figures (NME against N_real, CED, real-image equivalence)."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np

from gapkit.bench.results import CSV_COLUMNS, CellResult
from gapkit.bench.stats import Estimate, cell_interval, difference
from gapkit.bench.strategies import STRATEGIES
from gapkit.files import atomic_write_text
from gapkit.metrics import ced


def _order(name: str) -> int:
    base = name.split(" ")[0]
    return list(STRATEGIES).index(base) if base in STRATEGIES else len(STRATEGIES)


def table(rows: list[CellResult]) -> dict[str, dict[int, list[float]]]:
    """{strategy name: {n_real: [NME per seed]}}."""
    t: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        t[r.name][r.n_real].append(r.nme_pct)
    return t


def equivalent_real(nme: float, curve: dict[int, float]) -> tuple[float, str]:
    """How many real-only images give this NME, by log-linear interpolation of the real-only
    curve; (value, note) with note '<' / '>' when it falls outside the measured range."""
    ns = np.array(sorted(curve))
    vals = np.array([curve[n] for n in ns])
    # Force a non-increasing curve so that the inverse is defined.
    vals = np.minimum.accumulate(vals)
    if nme >= vals[0]:
        return float(ns[0]), "<="
    if nme < vals[-1]:
        return float(ns[-1]), ">"
    j = int(np.argmax(vals <= nme))
    if vals[j - 1] == vals[j]:
        return float(ns[j]), ""
    f = (vals[j - 1] - nme) / (vals[j - 1] - vals[j])
    return float(np.exp(np.log(ns[j - 1]) + f * (np.log(ns[j]) - np.log(ns[j - 1])))), ""


def per_face(rows: list[CellResult], protocol: str = "labels") -> dict[str, dict[int, np.ndarray]]:
    """{strategy name: {n_real: (seeds, test faces) per-face NME}} under a test protocol
    ("labels", or "detector": the faces the detector found)."""
    t: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(rows, key=lambda r: r.seed):
        if protocol == "labels":
            t[r.name][r.n_real].append(r.per_face_nme)
        elif r.detector is not None:
            t[r.name][r.n_real].append(r.detector.per_face_nme)
    return {k: {n: np.array(v) for n, v in d.items()} for k, d in t.items()}


def _versus(name: str, d: Estimate) -> str:
    """``name`` against real only, from the difference real - name (a separated one)."""
    side = "better" if d.mean > 0 else "worse"
    lo, hi = sorted((abs(d.lo), abs(d.hi)))
    return f"{name} is {side} than real only by {abs(d.mean):.2f} points [{lo:.2f}, {hi:.2f}]"


def findings(rows: list[CellResult]) -> list[str]:
    """Statements the intervals support: a difference is named only where its 95% interval
    leaves out zero, and a tie is called a tie."""
    pf = per_face(rows)
    if "real_only" not in pf:
        return ["real_only was not run, so nothing is compared against it."]
    real = pf["real_only"]
    ns = sorted(real)
    out = []
    for n in dict.fromkeys((ns[0], ns[-1])):
        diffs = {k: difference(real[n], v[n]) for k, v in pf.items() if k != "real_only" and n in v}
        if not diffs:
            continue
        better = sorted((k for k, d in diffs.items() if d.separates() and d.mean > 0), key=lambda k: -diffs[k].mean)
        ties = [k for k, d in diffs.items() if not d.separates()]
        if better:
            top = better[0]
            rest = [k for k in better[1:] if not difference(pf[k][n], pf[top][n]).separates()]
            head = f"With {n} real images, {_versus(top, diffs[top])}"
            out.append(head + (f"; {', '.join(rest)} cannot be told apart from it." if rest else "."))
        else:
            out.append(f"With {n} real images no strategy beats real only"
                       + (f" (ties: {', '.join(ties)})." if ties else "."))
    if "finetune" in pf:
        mean_real = {n: float(v.mean()) * 100 for n, v in real.items()}
        ft = pf["finetune"]
        small = [n for n in ns if n in ft and n < ns[-1]] or [ns[0]]
        n = small[len(small) // 2] if len(small) > 1 else small[0]
        est = cell_interval(ft[n])
        out.append(f"Real-image equivalence: fine-tuning with {n} real images reaches NME {est}%; "
                   + equivalence_bounds(est, mean_real) + ".")
    return out


def equivalence_bounds(est: Estimate, curve: dict[int, float], who: str = "real-only training") -> str:
    """How many images ``who`` (the curve's training, real-only by default) needs to reach the NME
    interval ``est``, as grid bounds: only the measured N values are claimed, never an
    interpolated count."""
    ns = sorted(curve)
    vals = np.minimum.accumulate([curve[n] for n in ns])

    def reach(v: float) -> int | None:
        return next((n for n, m in zip(ns, vals, strict=True) if m <= v), None)

    worst, best = reach(est.hi), reach(est.lo)  # a worse NME is reached with fewer images
    if worst is None:
        return f"{who} does not reach it with any measured N (up to {ns[-1]})"
    if best is None:
        return (f"{who} reaches the interval's worse end at N={worst}; its better end lies beyond "
                f"the largest measured N ({ns[-1]})")
    if worst == best:
        return f"{who} reaches that at N={worst} of the measured grid"
    return f"{who} reaches that interval somewhere between N={worst} and N={best} of the measured grid"


SMOKE = ("**Smoke test (`--quick`)**: a tiny grid with models far from trained. It checks that every "
         "strategy runs end to end; its numbers support no finding, so none is stated.")


def write_outputs(rows: list[CellResult], out: Path, title: str, smoke: bool = False) -> list[Path]:
    out = Path(out)
    atomic_write_text(out / "results.json", json.dumps([r.model_dump(mode="json") for r in rows], indent=1),
                      overwrite=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(r.model_dump(include=set(CSV_COLUMNS)) for r in rows)
    atomic_write_text(out / "results.csv", buf.getvalue(), overwrite=True)
    t = table(rows)
    ns = sorted({r.n_real for r in rows})
    norm = ", ".join(sorted({r.normaliser for r in rows}))
    lines = [f"# {title}", "", f"NME({norm}) in % on the real test set: mean over seeds and faces [95% bootstrap interval over faces and seeds].", "",
             "| strategy | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    intervals = {k: {n: cell_interval(v) for n, v in d.items()} for k, d in per_face(rows).items()}
    for k in sorted(t, key=_order):
        cells = [str(intervals[k][n]) if n in intervals[k] else "-" for n in ns]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += _detector_section(rows, ns)
    ran = [s for s in STRATEGIES.values() if s.name in {r.strategy for r in rows}]
    lines += ["", "Strategies: " + "; ".join(f"`{s.name}`: {s.label}" for s in ran) + "."]
    adapted = next((r.adapter for r in rows if r.adapter is not None and r.adapter.applied_to), None)
    if adapted is not None:
        lines += ["", f"Label adaptation: each cell's adapter is fitted on the {adapted.fitted_on} (its N_real "
                  f"images only); the adapted synthetic set (data_adapt, mix, finetune) applies it to the "
                  f"{adapted.applied_to}."]
    if smoke:
        lines[1:1] = ["", SMOKE]
        lines += ["", "## Findings", "", "None: this is a smoke test."]
    else:
        drawn = [r for r in rows if r.selection == "random"]  # the published protocol's findings
        lines += ["", "## Findings", ""] + [f"{i + 1}. {f}" for i, f in enumerate(findings(drawn))]
        lines += selection_section(rows)
    lines += ["", "Figures: `nme_vs_nreal.png`, `ced.png`, `equivalence.png`. Rows: `results.csv`.", ""]
    atomic_write_text(out / "report.md", "\n".join(lines), overwrite=True)
    return [out / "report.md", *plots(rows, out, intervals)]


def _verdict(d: Estimate, policy: str) -> str:
    return f"{policy} better" if d.lo > 0 else "random better" if d.hi < 0 else "tie"


def selection_section(rows: list[CellResult]) -> list[str]:
    """Each selection policy against random selection, per strategy and N_real: the paired
    difference (random - policy, by test face over seeds) and, where they differ, how many
    randomly drawn faces reach the policy's NME (grid bounds, as for real-image equivalence)."""
    policies = sorted({r.selection for r in rows} - {"random"})
    pf = per_face(rows)
    bases = sorted({r.name for r in rows if r.selection == "random"}, key=_order)
    if not policies or not bases:
        return []
    ns = sorted({r.n_real for r in rows})
    lines = ["", "## Which faces to label", "",
             "random - policy in NME points, paired by test face over seeds [95% interval] (positive: the "
             "policy's faces train a better detector than a random draw of as many).", "",
             "| strategy | policy | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|---|" + "---|" * len(ns)]
    notes = []
    for base in bases:
        curve = {m: float(v.mean()) * 100 for m, v in pf[base].items()}
        for pol in policies:
            mine = pf.get(f"{base} [{pol}]", {})
            cells = []
            for n in ns:
                if n not in mine or n not in pf[base]:
                    cells.append("-")
                    continue
                d = difference(pf[base][n], mine[n])
                cells.append(f"{d} {_verdict(d, pol)}")
                if d.separates():
                    notes.append(f"{base}: {pol} with {n} faces reaches NME {cell_interval(mine[n])}%; "
                                 f"{equivalence_bounds(cell_interval(mine[n]), curve, 'random selection')}.")
            lines.append(f"| {base} | {pol} | " + " | ".join(cells) + " |")
    lines += [""] + ([f"- {n}" for n in notes] or ["- No policy differs from random selection at any N: ties."])
    return lines


def _detector_section(rows: list[CellResult], ns: list[int]) -> list[str]:
    """The detector-box protocol's table, with the faces the detector missed stated."""
    det = next((r.detector for r in rows if r.detector is not None), None)
    if det is None:
        return []
    total, first_seed = det.found + det.missed, min(r.seed for r in rows)
    lines = ["", "### Detector boxes", "",
             f"Test faces cropped from the box of `{det.detector}`, calibrated to the landmark box on training "
             f"faces. It found {det.found} of {total} test faces; the {det.missed} it missed are not in these "
             "NMEs. FR@threshold counting a missed face as a failure, per strategy at the largest N: "
             + ", ".join(f"{r.name} {100 * r.detector.fr_all:.1f}%" for r in rows
                         if r.detector is not None and r.n_real == ns[-1] and r.seed == first_seed) + ".",
             "", "| strategy | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    pf = per_face(rows, "detector")
    for k in sorted(pf, key=_order):
        lines.append(f"| {k} | " + " | ".join(str(cell_interval(pf[k][n])) if n in pf[k] else "-" for n in ns) + " |")
    return lines


def _finish(fig, ax, xlabel: str, ylabel: str, path: Path) -> Path:
    import matplotlib.pyplot as plt  # deferred: only after plots() has chosen Agg (no display)

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plots(rows: list[CellResult], out: Path, intervals: dict[str, dict[int, Estimate]]) -> list[Path]:
    """The report's figures: NME against N_real with intervals, the CEDs at the smallest and
    largest N_real and, with real_only in the grid, each strategy's real-image equivalent."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: only once Agg is chosen (no display), and slow to import

    t = table(rows)
    nme_label = f"NME({', '.join(sorted({r.normaliser for r in rows}))}) %"
    paths = [_nme_plot(plt, t, intervals, nme_label, out / "nme_vs_nreal.png"),
             _ced_plot(plt, rows, nme_label, out / "ced.png")]
    if "real_only" in t:
        paths.append(_equivalence_plot(plt, t, out / "equivalence.png"))
    return paths


def _nme_plot(plt, t: dict, intervals: dict[str, dict[int, Estimate]], nme_label: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for k in sorted(t):
        ns = sorted(t[k])
        est = [intervals[k][n] for n in ns]
        (line,) = ax.plot(ns, [e.mean for e in est], marker="o", label=k, lw=2.2 if k == "real_only" else 1.5,
                          color="k" if k == "real_only" else None)
        # 95% bootstrap interval, in the line's colour
        ax.fill_between(ns, [e.lo for e in est], [e.hi for e in est], alpha=0.15, color=line.get_color())
    ax.set_xscale("log")
    return _finish(fig, ax, "N_real (real training images)", nme_label, path)


def _ced_plot(plt, rows: list[CellResult], nme_label: str, path: Path) -> Path:
    ns_all = sorted({r.n_real for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    for ax, n in zip(axes, (ns_all[0], ns_all[-1]), strict=True):
        per = defaultdict(list)
        for r in rows:
            if r.n_real == n:
                per[r.name] += r.per_face_nme
        for k, v in sorted(per.items()):
            x, y = ced(np.array(v), 0.15)
            ax.plot(100 * x, y, label=k, color="k" if k == "real_only" else None)
        ax.set_title(f"N_real = {n}")
        ax.set_xlabel(nme_label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of test faces")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _equivalence_plot(plt, t: dict, path: Path) -> Path:
    real = {n: float(np.mean(v)) for n, v in t["real_only"].items()}
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for k in sorted(t):
        if k == "real_only":
            continue
        ns = sorted(t[k])
        eq = [equivalent_real(float(np.mean(t[k][n])), real) for n in ns]
        ax.plot(ns, [e[0] for e in eq], marker="o", label=k)
        for n, (v, note) in zip(ns, eq, strict=True):
            if note:
                ax.annotate(note, (n, v), fontsize=8, xytext=(3, 3), textcoords="offset points")
    lim = [min(real), max(real)]
    ax.plot(lim, lim, "k--", lw=1, label="y = x: worth as many real images as it uses")
    ax.plot([], [], " ", label="between grid points: log-linear interpolation of real only;\n"
                              "'>': beyond the largest real-only N; '<=': at or below the smallest")
    ax.set_xscale("log")
    ax.set_yscale("log")
    return _finish(fig, ax, "N_real used by the strategy", "real-only images for the same NME", path)
