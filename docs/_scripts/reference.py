"""The reference pages, generated from the code and the data at every docs build, so they
cannot drift: formats (their INFO declarations), schemes (their JSON, with a picture of a
template shape), mappings, the CLI (from typer's click commands), the configuration files
(from the Pydantic settings and the comments beside their fields).

``pages()`` returns {path under docs/: text or bytes}; ``gen_pages.py`` hands them to
mkdocs-gen-files, and the tests call it directly.
"""

from __future__ import annotations

import ast
import inspect
import io
import textwrap
import tokenize
from functools import cache

import numpy as np


def pages() -> dict[str, str | bytes]:
    out: dict[str, str | bytes] = {"reference/formats.md": formats_page(), "reference/mappings.md": mappings_page(),
                                   "reference/cli.md": cli_page(), "reference/config.md": config_page(),
                                   "reference/benchmarks.md": benchmarks_page()}
    out |= scheme_pages()
    return out


# ---- formats -------------------------------------------------------------------------------

def formats_page() -> str:
    from gapkit.formats import FORMATS
    from gapkit.formats.common import CAPABILITIES

    lines = ["# Formats", "", "Every format gapkit reads, from each module's `INFO` declaration "
             "(`gapkit/formats/<name>.py`). `gapkit formats NAME` prints the same.", "",
             "| format | reads | writes | files | stores |", "|---|---|---|---|---|"]
    for name, mod in FORMATS.items():
        fi = mod.INFO
        lines.append(f"| [`{name}`](#{name}) | yes | {'yes' if hasattr(mod, 'write') else '-'} | "
                     f"{' '.join(f'`{s}`' for s in fi.files) or 'a folder'} | "
                     f"{', '.join(CAPABILITIES[c] for c in sorted(fi.stores)) or 'points only'} |")
    for name, mod in FORMATS.items():
        fi = mod.INFO
        lines += ["", f"## {name}", "", _md(fi.about), "", f"Reads {_md(fi.looks_for)}."]
        if fi.splits:
            lines.append(f"Split names: {', '.join(f'`{s}`' for s in fi.splits)}.")
        if fi.labels_only:
            lines.append("Reads the labels without the images too (`--no-images`).")
        for side, flag, opts in (("read", "-O", fi.read_options), ("write", "-W", fi.write_options)):
            if opts:
                lines += ["", f"| {side} option (`{flag} KEY=VALUE`) | meaning |", "|---|---|"]
                lines += [f"| `{k}` | {_md(v)} |" for k, v in opts.items()]
    return "\n".join(lines) + "\n"


# ---- schemes and mappings ------------------------------------------------------------------

def scheme_pages() -> dict[str, str | bytes]:
    from gapkit.schemes import get_scheme, scheme_names

    out: dict[str, str | bytes] = {}
    index = ["# Schemes", "", "Landmark schemes are data (`schemas/schemes/*.json`); `gapkit schemes NAME` prints one.",
             "", "| scheme | points | contour semantics | default normaliser | description |", "|---|---|---|---|---|"]
    for name in scheme_names():
        s = get_scheme(name)
        index.append(f"| [`{name}`]({name}.md) | {s.num_points} | {s.contour_semantics} | "
                     f"{s.default_normaliser} | {_md(s.description)} |")
        found = template(name)
        if found is not None:
            out[f"reference/schemes/{name}.png"] = scheme_figure(name, found[0])
        out[f"reference/schemes/{name}.md"] = scheme_page(name, found[1] if found else None)
    out["reference/schemes/index.md"] = "\n".join(index) + "\n"
    return out


def scheme_page(name: str, picture_source: str | None) -> str:
    from gapkit.schemes import get_scheme

    s = get_scheme(name)
    group_of = {i: g for g, idx in s.groups.items() for i in idx}
    lines = [f"# {name}", "", _md(s.description), "",
             f"{s.num_points} points; contour semantics `{s.contour_semantics}`"
             + (f"; outline groups {', '.join(f'`{g}`' for g in s.outline)}" if s.outline else "") + ".", ""]
    if picture_source:
        lines += [f"![{name} template shape with point indices]({name}.png)", "",
                  f"*A template shape ({picture_source}), 0-based indices.*", ""]
    else:
        lines += ["gapkit holds no template shape for this scheme (its points come only from data), "
                  "so there is no picture.", ""]
    lines += ["## Normalisers", "", "| name | measured as |", "|---|---|"]
    for n, norm in s.normalisers.items():
        how = "sqrt(w h) of the landmark box" if norm.bbox else f"centroid of {norm.a} to centroid of {norm.b}"
        lines.append(f"| `{n}`{' (default)' if n == s.default_normaliser else ''} | {how}"
                     + (f": {_md(norm.doc)}" if norm.doc else "") + " |")
    lines += ["", "## Groups", "", "| group | indices |", "|---|---|"]
    lines += [f"| `{g}` | {_ranges(idx)} |" for g, idx in s.groups.items()]
    lines += ["", "## Points", "", "| index | name | group | mirror (flip) |", "|---|---|---|---|"]
    for i, p in enumerate(s.points):
        j = s.flip[i]
        lines.append(f"| {i} | `{p}` | {group_of.get(i, '')} | {'itself' if j == i else f'{j} `{s.points[j]}`'} |")
    return "\n".join(lines) + "\n"


SIMULATED = {"ibug68": ("human68", "human semantics"), "facesynthetics70": ("projected70", "projected 3-D semantics")}


@cache
def template(name: str) -> tuple[np.ndarray, str] | None:
    """A template shape (K, 2) for the picture and where it comes from: the simulator's frontal
    mean for ibug68 and facesynthetics70, the fixtures' WFLW builder, or a mapping (or an index
    mapping's inverse) from one of those. None where gapkit has nothing to build one from."""
    from gapkit.errors import NoMappingError
    from gapkit.schemes import find_mapper, get_scheme, mappings
    from gapkit.sim import SimConfig, sample

    if name in SIMULATED:
        key, meaning = SIMULATED[name]
        cfg = SimConfig(domain="synthetic", max_yaw=0, max_pitch=0, max_roll=0)
        shape = np.mean([getattr(sample(i, cfg), key) for i in range(200)], axis=0)
        return shape, f"the mean of 200 frontal faces of gapkit's simulator, {meaning}"
    if name == "wflw98":
        from fixtures.make_fixtures import wflw98

        return wflw98(template("ibug68")[0]), "built from the ibug68 template as the test fixtures build WFLW shapes"
    for base in ("ibug68", "facesynthetics70", "wflw98"):
        try:
            mapper = find_mapper(base, name)
        except NoMappingError:  # no chain from this base: try the next
            continue
        return mapper(template(base)[0]), f"the {base} template through the mapping"
    k = get_scheme(name).num_points
    for m in mappings().values():  # a one-to-one index mapping onto ibug68, inverted
        if m.source == name and m.target == "ibug68" and m.status == "index" and len(set(m.entries)) == k:
            inv = np.full((k, 2), np.nan)
            inv[list(m.entries)] = template("ibug68")[0]
            return inv, f"the ibug68 template through the inverse of {m.name}"
    return None


def scheme_figure(name: str, shape: np.ndarray) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gapkit.schemes import get_scheme

    s = get_scheme(name)
    fig, ax = plt.subplots(figsize=(6, 6.5))
    for i, j in s.edges():
        ax.plot(*shape[[i, j]].T, color="0.75", lw=1)
    ax.scatter(*shape.T, s=8, color="tab:red")
    fs = 6 if s.num_points <= 70 else 4.5
    for i, (x, y) in enumerate(shape):
        ax.annotate(str(i), (x, y), fontsize=fs, xytext=(2, 2), textcoords="offset points")
    ax.set_aspect("equal")
    ax.invert_yaxis()  # image rows grow downwards
    ax.axis("off")
    ax.set_title(f"{name}: subject's right eye on the image's left", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def mappings_page() -> str:
    from gapkit.schemes import get_scheme, mappings

    lines = ["# Mappings", "", "Deterministic scheme mappings (`schemas/mappings/*.json`). Each target point is a "
             "source index, or a weighted mix of source points (per axis where needed). Chains compose: "
             "`gapkit convert --scheme` finds a path.", "",
             "| mapping | source | target | kind | reference |", "|---|---|---|---|---|"]
    maps = mappings()
    lines += [f"| [`{m.name}`](#{m.name.lower()}) | `{m.source}` | `{m.target}` | {m.status} | "
              f"{_md(m.reference)} |" for m in maps.values()]
    for m in maps.values():
        src, tgt = get_scheme(m.source), get_scheme(m.target)
        lines += ["", f"## {m.name}", "", "| target point | from source |", "|---|---|"]
        for t, e in enumerate(m.entries):
            lines.append(f"| {t} `{tgt.points[t]}` | {_entry(e, src.points)} |")
    return "\n".join(lines) + "\n"


def _entry(e, names: list[str]) -> str:
    if isinstance(e, int):
        return f"{e} `{names[e]}`"
    if isinstance(e, dict):
        return "; ".join(f"{axis}: " + _entry(mix, names) for axis, mix in e.items())
    return " + ".join(f"{w:g} × {i} `{names[i]}`" for i, w in e)


# ---- the command line ----------------------------------------------------------------------

def cli_page() -> str:
    import typer

    from gapkit.cli.main import app

    root = typer.main.get_command(app)
    lines = ["# Command line", "", "Every `gapkit` command and option, read from the typer app "
             "(`gapkit COMMAND --help` prints the same). Exit codes, the same for every command: **0** done; "
             "**1** bad records were skipped (listed); **2** could not start; **3** an internal error was caught "
             "on some records.", ""]

    def walk(cmd, path: list[str]) -> None:  # typer's own click: known by shape, not by class
        if hasattr(cmd, "commands"):
            for name in sorted(cmd.commands):
                walk(cmd.commands[name], [*path, name])
            return
        lines.extend(_command(cmd, path))

    walk(root, ["gapkit"])
    return "\n".join(lines) + "\n"


def _command(cmd, path: list[str]) -> list[str]:
    args = " ".join(p.name.upper() + ("..." if p.nargs == -1 else "")
                    for p in cmd.params if p.param_type_name == "argument")
    out = ["", f"## {' '.join(path[1:])}", "", f"```\n{' '.join(path)} [OPTIONS] {args}\n```", "",
           _md(inspect.cleandoc(cmd.help or "")), "", "| option | meaning | default |", "|---|---|---|"]
    for p in cmd.params:
        if p.param_type_name == "argument":
            out.append(f"| `{p.name.upper()}` | {_md(getattr(p, 'help', '') or '')} | "
                       f"{'required' if p.required else ''} |")
        elif not p.hidden:
            names = ", ".join(f"`{o}`" for o in p.opts + p.secondary_opts)
            unset = p.default is None or p.default is False or p.default == () or callable(p.default)
            default = "required" if p.required else ("" if unset else f"`{p.default}`")
            out.append(f"| {names} | {_md(p.help or '')} | {default} |")
    return out


# ---- benchmark scripts ---------------------------------------------------------------------

def benchmarks_page() -> str:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "benchmarks"
    lines = ["# Benchmark scripts", "", "Performance and accuracy scripts in `benchmarks/`, each printing measured "
             "figures against a named baseline; their own docstrings, as they are in the code. Measured tables: "
             "[results](../results/default.md).", ""]
    for path in sorted(root.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if doc:
            lines += [f"## {path.name}", "", _md_block(doc), ""]
    return "\n".join(lines)


# ---- configuration files -------------------------------------------------------------------

CONFIG_MODELS = [
    ("gapkit.bench.config", "BenchConfig", "the benchmark TOML (`gapkit benchmark --config`)"),
    ("gapkit.bench.config", "Grid", "its `[grid]` table"),
    ("gapkit.bench.config", "Finetune", "its `[finetune]` table"),
    ("gapkit.bench.config", "Metric", "its `[metric]` table"),
    ("gapkit.faceset", "DataSource", "each `real_train`, `real_test` and `synthetic` table"),
    ("gapkit.train.trainer", "TrainConfig", "its `[train]` table, and `gapkit train`'s settings"),
    ("gapkit.train.trainer", "TwoStage", "`[train.refine]`: the detector's second stage"),
    ("gapkit.augment", "Augment", "`[train.augment]`"),
    ("gapkit.refine.config", "RefineConfig", "the image refiner (`--refine KEY=VALUE`, `[train.refine.refiner]`)"),
    ("gapkit.adapt.config", "FitConfig", "the label adapter's shape fit (`gapkit adapt fit`)"),
    ("gapkit.sim.generate", "SimConfig", "the simulator (`gapkit sim`)"),
    ("gapkit.gap.measure", "GapOptions", "the gap report (`gapkit gap report`)"),
]


def config_page() -> str:
    import importlib

    lines = ["# Configuration", "", "Every settings class, its fields, types and defaults, read from the code "
             "(the text beside a field is its comment there). All settings refuse unknown keys.", ""]
    for module, name, what in CONFIG_MODELS:
        cls = getattr(importlib.import_module(module), name)
        lines += [f"## {name}", "", f"`{module}.{name}`: {what}.", ""]
        if cls.__doc__:  # its own, not one inherited from Settings
            lines += [_md_block(inspect.cleandoc(cls.__doc__)), ""]
        lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
        notes = field_comments(cls)
        for field, info in cls.model_fields.items():
            default = "required" if info.is_required() else (
                f"`{info.default_factory().__class__.__name__}()`" if info.default_factory else f"`{info.default!r}`")
            kind = _md(_type_name(info.annotation))
            lines.append(f"| `{field}` | {kind} | {default} | {_md(info.description or notes.get(field, ''))} |")
        lines.append("")
    return "\n".join(lines)


def field_comments(cls) -> dict[str, str]:
    """Each field's comment in the class source: the one at the end of its line, or the
    comment lines just above it."""
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = {tok.start[0]: tok.string.lstrip("# ").strip()
                for tok in tokenize.generate_tokens(io.StringIO(src).readline) if tok.type == tokenize.COMMENT}
    lines = src.splitlines()
    out = {}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            row = node.lineno
            text = comments.get(row) if lines[row - 1].split("#")[0].strip() else None
            above = []
            k = row - 1
            while k in comments and lines[k - 1].strip().startswith("#"):
                above.insert(0, comments[k])
                k -= 1
            out[node.target.id] = " ".join([*above, *([text] if text else [])])
    return out


def _type_name(t) -> str:
    text = getattr(t, "__name__", None) if not getattr(t, "__args__", None) else None
    text = text or str(t).replace("typing.", "")
    for noise in ("gapkit.", "pathlib.", "annotated_types.", "pydantic.types.", "pydantic.functional_validators."):
        text = text.replace(noise, "")
    return text if len(text) < 80 else text[:77] + "..."


def _ranges(idx: list[int]) -> str:
    if idx == list(range(idx[0], idx[-1] + 1)) and len(idx) > 2:
        return f"{idx[0]}-{idx[-1]}"
    return ", ".join(map(str, idx))


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def _md_block(text: str) -> str:
    return text.replace("<", "&lt;")
