"""gapkit is the only import root: cli/ and schemas/ install as gapkit.cli and gapkit.schemas."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_has_one_import_root(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("gapkit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"gapkit"}
    assert "gapkit/cli/main.py" in names and "gapkit/schemas/schemes/ibug68.json" in names
    assert "gapkit/schemas/face_record.schema.json" in names


def test_installed_package_data_is_found():
    import gapkit.schemas
    from gapkit.schemes import scheme_names

    assert Path(gapkit.schemas.__file__).parent.name in ("schemas",)
    assert "ibug68" in scheme_names()


def test_fiftyone_is_imported_only_by_gapkit_fiftyone():
    """`gapkit convert` and friends must not pay for FiftyOne's import (and database start)."""
    import subprocess
    import sys

    code = ("import sys, gapkit.cli.main, gapkit.convert, gapkit.gap, gapkit.adapt, gapkit.bench; "
            "print('fiftyone' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
