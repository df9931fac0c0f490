"""`gapkit gap report`: the gaps between face sets A and B, as numbers (``gap.json``), a
readable ``report.md`` and PNG figures.

A is typically synthetic and B real. B's scheme is the common one: A is brought to it by the
deterministic mapping (``before``) and, with an adapter, by the adapter (``after``). The gaps
are the registered measures (:mod:`gapkit.gap.measure`), walked in order: label, pose and
visual. A new one is its module and one :func:`register_measure` line below.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gapkit.adapt import LabelAdapter
from gapkit.errors import ConfigError, GapkitError, NoMappingError, OutputExistsError, Problem
from gapkit.faceset import DataSource, FaceSet, load
from gapkit.files import atomic_write_text
from gapkit.gap.label_measure import LabelMeasure
from gapkit.gap.measure import MEASURES, GapContext, GapOptions, Log, Row, register_measure
from gapkit.gap.pose_measure import PoseMeasure
from gapkit.gap.visual_measure import VisualMeasure
from gapkit.pose import records_pose
from gapkit.records import one_scheme
from gapkit.schemes import find_mapper, get_scheme

__all__ = ["GapOptions", "GapResult", "gap_report", "markdown", "table_rows"]

# The measures every report takes, in the order of gap.json, report.md and the CLI's table.
register_measure(LabelMeasure())
register_measure(PoseMeasure())
register_measure(VisualMeasure())


@dataclass
class GapResult:
    summary: dict
    files: list[Path]
    problems: list[Problem] = field(default_factory=list)


def _load(src: str | Path, fmt: str | None, splits: list[str] | None, opt: GapOptions,
          side: str) -> tuple[FaceSet, list[Problem]]:
    source = DataSource(path=Path(src), format=fmt, splits=splits, labels_only=opt.labels_only)
    faces, rep = load(source, require=f"set {side}")
    return faces.subset(opt.max_faces, [opt.seed, ord(side)]), list(rep.problems)


def _prepare_a(a_recs: FaceSet, b_scheme: str, adapter: LabelAdapter | None,
               problems: list[Problem]) -> dict[str, np.ndarray]:
    a_scheme = one_scheme(a_recs, "A")
    pts = a_recs.points
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


def _context(a_recs: FaceSet, b_recs: FaceSet, names: tuple[str, str], opt: GapOptions,
             log: Log, progress: Callable[[int], None] | None, problems: list[Problem]) -> GapContext:
    """A's stages in B's scheme and both sets' head poses: what every measure reads."""
    b_scheme = one_scheme(b_recs, "B")
    scheme = get_scheme(b_scheme)
    adapter = LabelAdapter.load(opt.adapter).to(opt.device) if opt.adapter else None
    if adapter is not None and adapter.refiner is not None and opt.labels_only:
        raise ConfigError(f"{opt.adapter} refines on the images, which --no-images does not read; drop one")
    stages = _prepare_a(a_recs, b_scheme, adapter, problems)
    b_pts = b_recs.points
    log(f"pose of {len(a_recs)} + {len(b_recs)} faces")
    pose_a = records_pose(a_recs)
    pose_b = records_pose(b_recs)
    return GapContext(a_recs, b_recs, stages, b_pts, scheme, pose_a, pose_b, names, opt, log, progress, problems)


def gap_report(a_src: str | Path, b_src: str | Path, out: str | Path, *, a_fmt: str | None = None,
               b_fmt: str | None = None, a_splits: list[str] | None = None, b_splits: list[str] | None = None,
               names: tuple[str, str] = ("A", "B"), options: GapOptions | None = None, overwrite: bool = False,
               log: Log = lambda s: None, progress: Callable[[int], None] | None = None) -> GapResult:
    """Measure every registered gap between A and B and write them under ``out``."""
    opt = options or GapOptions()
    out = Path(out)
    if (out / "gap.json").exists() and not overwrite:
        raise OutputExistsError(f"{out} already holds a gap report; pass --overwrite to replace it")
    a_recs, a_bad = _load(a_src, a_fmt, a_splits, opt, "A")
    b_recs, b_bad = _load(b_src, b_fmt, b_splits, opt, "B")
    ctx = _context(a_recs, b_recs, names, opt, log, progress, a_bad + b_bad)
    summary: dict = {
        "a": {"source": str(a_src), "name": names[0], "n": len(a_recs), "scheme": a_recs[0].scheme,
              "skipped": len(a_bad)},
        "b": {"source": str(b_src), "name": names[1], "n": len(b_recs), "scheme": b_recs[0].scheme,
              "skipped": len(b_bad)},
        "adapter": str(opt.adapter) if opt.adapter else None,
    }
    files: list[Path] = []
    for measure in MEASURES.values():
        got = measure.measure(ctx)
        if got is not None:
            summary[measure.key] = got.numbers
            files += got.draw(out)
    summary["problems"] = [p.to_dict() for p in ctx.problems]
    atomic_write_text(out / "gap.json", json.dumps(_clean(summary), indent=1, allow_nan=False) + "\n", overwrite=True)
    files.append(out / "gap.json")
    atomic_write_text(out / "report.md", markdown(summary), overwrite=True)
    files.append(out / "report.md")
    return GapResult(summary, files, ctx.problems)


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


def markdown(s: dict) -> str:
    """The report: both sets, each measure's section in order, then the skipped input."""
    a, b = s["a"]["name"], s["b"]["name"]
    lines = [f"# Gap report: {a} against {b}", "",
             f"- {a}: `{s['a']['source']}`, {s['a']['n']} faces ({s['a']['scheme']}), {s['a']['skipped']} skipped",
             f"- {b}: `{s['b']['source']}`, {s['b']['n']} faces ({s['b']['scheme']}), {s['b']['skipped']} skipped", ""]
    for measure in MEASURES.values():
        if measure.key in s:
            lines += measure.section(s)
    if s["problems"]:
        lines += ["## Skipped input", ""] + [f"- `{p['path']}`{':' + str(p['line']) if p['line'] else ''}: {p['reason']}"
                                             for p in s["problems"][:50]]
        if len(s["problems"]) > 50:
            lines.append(f"- ... and {len(s['problems']) - 50} more (gap.json)")
    return "\n".join(lines) + "\n"


def table_rows(s: dict) -> list[Row]:
    """The CLI's table of a report's summary ``s``: each measure's rows (gap, measure, value) in order."""
    return [row for measure in MEASURES.values() if measure.key in s for row in measure.rows(s)]
