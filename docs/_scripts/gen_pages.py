"""mkdocs-gen-files entry point: the reference pages of ``reference.py`` and the results pages'
tables of ``results.py``, written as virtual files of the build (nothing lands in docs/)."""

import sys
from pathlib import Path

import mkdocs_gen_files

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[2])]

import reference  # noqa: E402 - after the path above

for path, content in reference.pages().items():
    with mkdocs_gen_files.open(path, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)
