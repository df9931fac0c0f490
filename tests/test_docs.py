"""The documentation cannot rot: every results block agrees with its committed results file
(and the default run's file with today's code), every runnable command block of the guides
runs, every Python API example runs, and the generated reference covers what the code holds."""

from __future__ import annotations

import doctest
import importlib.util
import inspect
import os
import pydoc
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gapkit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SCRIPTS = ROOT / "docs" / "_scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


results = _script("results")

# ---- results blocks ------------------------------------------------------------------------

BLOCKS = [(page, file, table, text) for page in results.PAGES for file, table, text in results.blocks(page.read_text())]


def test_pages_have_results_blocks():
    pages = {b[0].name for b in BLOCKS}
    assert {"README.md", "default.md", "detector-vs-ert.md"} <= pages


@pytest.mark.parametrize("page,file,table,text", BLOCKS,
                         ids=[f"{b[0].relative_to(ROOT)}:{b[1]}:{b[2]}" for b in BLOCKS])
def test_results_block_matches_its_file(page, file, table, text):
    assert text == results.render(file, table) + "\n", (
        f"{page.relative_to(ROOT)}: the {table} block differs from docs/results/{file}; "
        "run `python docs/_scripts/results.py --write`")


def test_default_run_is_of_todays_code():
    doc = __import__("json").loads((results.RESULTS / "default-sim.json").read_text())
    assert doc["code_digest"] == results.code_digest(), (
        "code the default run depends on changed since docs/results/default-sim.json was measured: "
        "rerun `make demo` and collect it (see docs/_scripts/results.py)")


def test_code_digest_follows_the_code_not_its_comments(tmp_path):
    deps = results.dependencies()
    names = {p.relative_to(ROOT).as_posix() for p in deps}
    assert {"gapkit/bench/runner.py", "gapkit/train/trainer.py", "gapkit/sim/generate.py",
            "gapkit/adapt/shape_fit.py", "schemas/schemes/ibug68.json"} <= names
    assert "gapkit/fiftyone.py" not in names and "gapkit/api.py" not in names
    src = "def f(x):\n    '''doc'''\n    return x + 1  # why\n"
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text(src)
    b.write_text(src.replace("doc", "other words").replace("# why", "# because"))
    c.write_text(src.replace("x + 1", "x + 2"))
    assert results._code(a) == results._code(b) != results._code(c)


def test_a_changed_table_is_caught():
    page = "<!-- results: detector-vs-ert.json ert -->\n| stale |\n<!-- /results -->\n"
    (file, table, text), = results.blocks(page)
    assert text != results.render(file, table) + "\n"
    assert results.blocks(results.refresh(page))[0][2] == results.render(file, table) + "\n"


# ---- runnable command blocks -------------------------------------------------------------

FENCE = re.compile(r"<!-- runnable(?:: (\w+))? -->\n```(bash|python)\n(.*?)```", re.S)


def _runnable(page: Path) -> list[tuple[str | None, str, str]]:
    return [(m.group(1), m.group(2), m.group(3)) for m in FENCE.finditer(page.read_text())]


GUIDES = [p for p in sorted((ROOT / "docs").rglob("*.md")) if _runnable(p)]


def _missing_tier(tier: str | None) -> str | None:
    """Why a block of this tier cannot run here, or None when it can."""
    if tier == "shared" and not SHARED.is_dir():
        return "needs ../shared/data"
    if tier == "ray" and importlib.util.find_spec("ray") is None:
        return "needs ray"
    return None


def test_every_guide_has_a_runnable_block():
    guides = {p.name for p in (ROOT / "docs" / "guides").glob("*.md")}
    assert guides and guides - {"ray.md"} <= {p.name for p in GUIDES}


@pytest.mark.parametrize("page", GUIDES, ids=[str(p.relative_to(ROOT / "docs")) for p in GUIDES])
def test_guide_blocks_run(page, tmp_path):
    """A page's blocks run in order in one empty folder, with ../shared beside it when the data
    tier is there, as a user would run them after reading the page."""
    work = tmp_path / "work"
    work.mkdir()
    if SHARED.parent.is_dir():
        (tmp_path / "shared").symlink_to(SHARED.parent)
    (work / "examples").symlink_to(ROOT / "examples")
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FIFTYONE_DO_NOT_TRACK="true")
    ran = 0
    for tier, lang, code in _runnable(page):
        if _missing_tier(tier):
            continue
        cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, f"{page.name} block:\n{code}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
        ran += 1
    if not ran:
        pytest.skip("every runnable block of this page needs a tier that is absent")


# ---- the Python API ------------------------------------------------------------------------

def test_help_lists_the_api():
    import gapkit.adapt  # noqa: F401 - a wing's package import sets an attribute on gapkit: none may shadow the API
    import gapkit.predict  # noqa: F401
    import gapkit.train  # noqa: F401

    assert all(inspect.isfunction(getattr(gapkit, name)) for name in gapkit.API)
    text = pydoc.render_doc(gapkit, renderer=pydoc.plaintext)
    for name in gapkit.API:
        assert re.search(rf"^\s+{name}\(", text, re.M), f"help(gapkit) does not list {name}"
        doc = getattr(gapkit, name).__doc__
        assert "Examples:" in doc and ">>>" in doc, f"gapkit.{name} has no example"


def test_import_gapkit_stays_light():
    code = "import sys, gapkit; print('torch' in sys.modules, 'gapkit.bench' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("name", gapkit.API)
def test_api_example_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    func = getattr(gapkit, name)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(func, f"gapkit.{name}", globs={"Path": Path})
    assert tests and tests[0].examples
    for t in tests:
        runner.run(t)
    assert runner.failures == 0, f"gapkit.{name}: {runner.failures} example(s) failed (see the output above)"


# ---- the generated reference ---------------------------------------------------------------

def test_reference_covers_the_code():
    from gapkit.formats import FORMATS
    from gapkit.schemes import mappings, scheme_names

    reference = _script("reference")
    pages = reference.pages()
    formats, maps, cli, config = (pages[f"reference/{n}.md"] for n in ("formats", "mappings", "cli", "config"))
    assert all(f"## {name}" in formats for name in FORMATS)
    assert all(f"## {m}" in maps for m in mappings())
    for name in scheme_names():
        page = pages[f"reference/schemes/{name}.md"]
        assert page.count("\n| ") >= 2 and f"# {name}" in page
    assert "reference/schemes/ibug68.png" in pages and pages["reference/schemes/ibug68.png"][:4] == b"\x89PNG"
    for command in ("convert", "validate", "adapt fit", "benchmark", "train", "predict", "export", "gap report",
                    "app", "sim", "select"):
        assert f"\n## {command}\n" in cli, f"the CLI reference has no {command}"
    assert "`--overwrite`" in cli
    for cls in ("BenchConfig", "TrainConfig", "RefineConfig", "SimConfig"):
        assert f"## {cls}" in config
    budget = next(line for line in config.splitlines() if line.startswith("| `budget_s` |"))
    assert "Wall-clock budget" in budget  # the comment block above the field, read from the source


def test_field_comments_are_read_from_the_source():
    from gapkit.bench.config import Finetune

    notes = _script("reference").field_comments(Finetune)
    assert notes["steps"] == "default: train.steps // 2"
    assert notes["lr_scale"] == "of train.lr"
