"""Results tables in the README and the documentation site, generated from committed results
files (``docs/results/*.json``) so that a page cannot say what its run did not measure.

A page marks each generated block::

    <!-- results: FILE TABLE -->
    ...generated markdown...
    <!-- /results -->

``python docs/_scripts/results.py --write`` regenerates every block; the tests fail when a
block and its file disagree, and when the default run's file was measured with other code
than the code of today (``code_digest``). To refresh the default run::

    make demo
    python docs/_scripts/results.py collect runs/default-sim docs/results/default-sim.json \
        --command "make demo" --wall-s SECONDS
    python docs/_scripts/results.py --write
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"(<!-- results: (\S+) (\S+) -->\n)(.*?)(<!-- /results -->)", re.S)
# What the default benchmark run executes: these packages and every gapkit module they import.
DEFAULT_RUN_ROOTS = ("gapkit.bench", "gapkit.sim")


# ---- the code a run depends on -------------------------------------------------------------

def _module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("gapkit.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gapkit"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from gapkit.x import module`
    return {m for m in out if m != "gapkit" and _module_file(m) is not None}


def dependencies(roots: tuple[str, ...] = DEFAULT_RUN_ROOTS) -> list[Path]:
    """The source files of ``roots`` and every gapkit module they import (deferred imports
    too), their packages' ``__init__`` files, and the scheme and mapping data."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]  # parent packages run first
        todo += sorted(_imports(_module_file(name)) - seen)
    files = {_module_file(n) for n in seen} - {ROOT / "gapkit" / "version.py"}
    return sorted(files) + sorted((ROOT / "schemas").rglob("*.json"))


def code_digest(roots: tuple[str, ...] = DEFAULT_RUN_ROOTS) -> str:
    """sha256 of what those files do: Python as its syntax tree without docstrings (so a
    comment or a docstring does not invalidate a run), data as bytes."""
    h = hashlib.sha256()
    for path in dependencies(roots):
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(_code(path) if path.suffix == ".py" else path.read_bytes())
    return h.hexdigest()[:16]


def _code(path: Path) -> bytes:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


# ---- collecting a run into a results file --------------------------------------------------

def collect_benchmark(run: Path, command: str, wall_s: float | None, digest: bool) -> dict:
    """The summary of a `gapkit benchmark` run folder: NME intervals per strategy and N_real
    (and per face detector protocol when present), the report's findings and sections."""
    from gapkit.bench.report import findings, per_face, selection_section
    from gapkit.bench.results import collect
    from gapkit.bench.stats import cell_interval
    from gapkit.devices import available_cores

    rows = collect(run)

    def intervals(protocol: str) -> dict:
        return {name: {str(n): _est(cell_interval(v)) for n, v in sorted(d.items())}
                for name, d in per_face(rows, protocol).items()}

    doc = {"run": run.name, "kind": "benchmark", "command": command, "wall_s": wall_s, "cells": len(rows),
           "machine": f"{available_cores()} CPU cores ({_cpu()})", "n_real": sorted({r.n_real for r in rows}),
           "normaliser": rows[0].normaliser, "nme": intervals("labels"),
           "findings": findings([r for r in rows if r.selection == "random"]),
           "selection": selection_section(rows)}
    if any(r.detector is not None for r in rows):
        doc["nme_detector"] = intervals("detector")
    if digest:
        doc["code_digest"] = code_digest()
    return doc


def _est(e) -> list[float]:
    return [round(e.mean, 4), round(e.lo, 4), round(e.hi, 4)]


def _cpu() -> str:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name"))
        return line.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return "unknown CPU"


# ---- rendering -----------------------------------------------------------------------------

def _interval(v: list[float] | dict) -> str:
    m, lo, hi = (v["mean"], v["lo"], v["hi"]) if isinstance(v, dict) else v
    return f"{m:.2f} [{lo:.2f}, {hi:.2f}]"


def _order(name: str) -> tuple[int, str]:
    first = ("real_only", "synthetic_only", "label_adapt", "data_adapt", "finetune", "mix")
    return next((i for i, s in enumerate(first) if name.startswith(s)), len(first)), name


def nme_table(doc: dict, key: str = "nme") -> str:
    ns = doc["n_real"]
    lines = ["| strategy | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    for name in sorted(doc[key], key=_order):
        cells = [_interval(doc[key][name][str(n)]) if str(n) in doc[key][name] else "-" for n in ns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings_list(doc: dict) -> str:
    return "\n".join(f"{i + 1}. {f}" for i, f in enumerate(doc["findings"]))


def selection_tables(doc: dict) -> str:
    return "\n".join(doc["selection"]).strip()


def provenance(doc: dict) -> str:
    wall = f", {doc['wall_s'] / 60:.1f} minutes wall" if doc.get("wall_s") else ""
    return (f"Run `{doc['run']}`: `{doc['command']}`, {doc.get('cells', '?')} cells on {doc['machine']}{wall}"
            + (f"; code digest `{doc['code_digest']}`" if doc.get("code_digest") else "") + ".")


ERT_NAMES = {"ert": "dlib ERT", "gapkit": "gapkit one-stage", "two_stage": "**gapkit two-stage**"}


def _verdict(d: dict, a: str, b: str) -> str:
    return f"{b} better" if d["lo"] > 0 else f"{a} better" if d["hi"] < 0 else "tie"


def ert_table(doc: dict) -> str:
    lines = ["| N_real | method | NME [95%] | FR@8% | AUC@8% | train s | faces/s | vs ERT | vs one-stage |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        for k, name in ERT_NAMES.items():
            if k not in r:
                continue
            v, d_ert, d_one = r[k], r["diffs"].get(f"ert-{k}"), r["diffs"].get(f"gapkit-{k}")
            lines.append(f"| {r['n']:,} | {name} | {_interval(v['nme'])} | {100 * v['fr']:.1f}% | {v['auc']:.3f} | "
                         f"{v['train_s']:.0f} | {v['faces_per_s']:,.0f} | "
                         + (f"{_interval(d_ert)} {_verdict(d_ert, 'ERT', 'gapkit')}" if d_ert else "") + " | "
                         + (f"{_interval(d_one)} {_verdict(d_one, 'one-stage', 'two-stage')}" if d_one else "") + " |")
    ref = doc.get("dlib68_reference")
    if ref:
        lines.append(f"| (300-W train and more) | dlib's pretrained 68-point model | {_interval(ref['nme'])} | "
                     f"{100 * ref['fr']:.1f}% | {ref['auc']:.3f} | | {ref['faces_per_s']:,.0f} | | |")
    return "\n".join(lines)


def plain_table(doc: dict, key: str = "table") -> str:
    t = doc[key]
    lines = ["| " + " | ".join(t["columns"]) + " |", "|" + "---|" * len(t["columns"])]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in t["rows"]]
    return "\n".join(lines)


RENDERERS = {
    "nme": nme_table,
    "nme_detector": lambda doc: nme_table(doc, "nme_detector"),
    "findings": findings_list,
    "selection": selection_tables,
    "provenance": provenance,
    "ert": ert_table,
    "table": plain_table,
}


def render(file: str, table: str) -> str:
    doc = json.loads((RESULTS / file).read_text())
    if table in RENDERERS:
        return RENDERERS[table](doc)
    return plain_table(doc, table)  # a named plain table of the file


def blocks(text: str) -> list[tuple[str, str, str]]:
    """(file, table, the block's current text) for every generated block of a page."""
    return [(m.group(2), m.group(3), m.group(4)) for m in BLOCK.finditer(text)]


def refresh(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group(2), m.group(3)) + "\n" + m.group(5), text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    c = sub.add_parser("collect", help="summarise a benchmark run folder into a results file")
    c.add_argument("run", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--command", required=True)
    c.add_argument("--wall-s", type=float)
    c.add_argument("--digest", action="store_true", help="record the code digest (the default run)")
    ap.add_argument("--write", action="store_true", help="regenerate every marked block of the pages")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.cmd == "collect":
        doc = collect_benchmark(args.run, args.command, args.wall_s, args.digest)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.out}")
    if args.write:
        for page in PAGES:
            text = page.read_text()
            new = refresh(text)
            if new != text:
                page.write_text(new)
                print(f"updated {page.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
