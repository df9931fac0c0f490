"""Benchmark outputs: results.json / results.csv, report.md with the headline findings
computed from the numbers, and the figures (NME against N_real, CED, real-image equivalence)."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from gapkit.bench.results import CSV_COLUMNS, CellResult
from gapkit.bench.strategies import STRATEGIES
from gapkit.files import atomic_write_text


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


def findings(rows: list[CellResult]) -> list[str]:
    t = table(rows)
    if "real_only" not in t:
        return ["real_only was not run, so nothing is compared against it."]
    mean = {k: {n: float(np.mean(v)) for n, v in d.items()} for k, d in t.items()}
    real = mean["real_only"]
    ns = sorted(real)
    out = []
    n0, n1 = ns[0], ns[-1]
    others = {k: v for k, v in mean.items() if k != "real_only"}
    if others:
        best0 = min(others, key=lambda k: others[k].get(n0, np.inf))
        d0 = real[n0] - others[best0][n0]
        best1 = min(others, key=lambda k: others[k].get(n1, np.inf))
        d1 = real[n1] - others[best1][n1]
        out.append(f"With {n0} real images the best strategy is **{best0}**: NME {others[best0][n0]:.2f}% against "
                   f"{real[n0]:.2f}% for real only ({d0:+.2f} points in its favour). With {n1} real images: "
                   f"**{best1}** {others[best1][n1]:.2f}% against {real[n1]:.2f}% ({d1:+.2f}); the advantage "
                   f"{'shrinks' if d1 < d0 else 'does not shrink'} as N_real grows.")
    if "finetune" in mean:
        ft = mean["finetune"]
        small = [n for n in ns if n in ft and n < n1] or [n0]
        n = small[len(small) // 2] if len(small) > 1 else small[0]
        eq, note = equivalent_real(ft[n], real)
        out.append(f"Real-image equivalence: fine-tuning with {n} real images reaches NME {ft[n]:.2f}%, "
                   f"which real-only training needs {note}{eq:.0f} real images for.")
    if "label_adapt" in mean:
        la = mean["label_adapt"]
        out.append(f"Synthetic-only training with label adaptation of its predictions reaches NME "
                   f"{min(la.values()):.2f}%-{max(la.values()):.2f}% across N_real (adapter fitted on N_real pairs), "
                   f"against {real[n1]:.2f}% for real-only with all {n1} real images.")
    return out


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
    lines = [f"# {title}", "", f"NME({norm}) in % on the real test set, mean ± sd over seeds.", "",
             "| strategy | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    for k in sorted(t, key=_order):
        cells = []
        for n in ns:
            v = t[k].get(n)
            cells.append(f"{np.mean(v):.2f} ± {np.std(v):.2f}" if v else "-")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    ran = [s for s in STRATEGIES.values() if s.name in {r.strategy for r in rows}]
    lines += ["", "Strategies: " + "; ".join(f"`{s.name}`: {s.label}" for s in ran) + "."]
    if smoke:
        lines[1:1] = ["", SMOKE]
        lines += ["", "## Findings", "", "None: this is a smoke test."]
    else:
        lines += ["", "## Findings", ""] + [f"{i + 1}. {f}" for i, f in enumerate(findings(rows))]
    lines += ["", "Figures: `nme_vs_nreal.png`, `ced.png`, `equivalence.png`. Rows: `results.csv`.", ""]
    atomic_write_text(out / "report.md", "\n".join(lines), overwrite=True)
    return [out / "report.md", *plots(rows, out)]


def _finish(fig, ax, xlabel: str, ylabel: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plots(rows: list[CellResult], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gapkit.metrics import ced

    t = table(rows)
    nme_label = f"NME({', '.join(sorted({r.normaliser for r in rows}))}) %"
    paths = []
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for k in sorted(t):
        ns = sorted(t[k])
        m = np.array([np.mean(t[k][n]) for n in ns])
        s = np.array([np.std(t[k][n]) for n in ns])
        ax.plot(ns, m, marker="o", label=k, lw=2.2 if k == "real_only" else 1.5, color="k" if k == "real_only" else None)
        ax.fill_between(ns, m - s, m + s, alpha=0.15)
    ax.set_xscale("log")
    paths.append(_finish(fig, ax, "N_real (real training images)", nme_label, out / "nme_vs_nreal.png"))

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
    paths.append(out / "ced.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    if "real_only" in t:
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
        ax.plot(lim, lim, "k--", lw=1, label="real only (y = x)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        paths.append(_finish(fig, ax, "N_real used by the strategy", "real-only images for the same NME",
                             out / "equivalence.png"))
    return paths
