# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export FIFTYONE_DO_NOT_TRACK := true
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: an open range would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# The main job until the simulator lands: validate and convert the bundled fixtures.
demo: setup
	$(VENV)/bin/gapkit benchmark
	$(VENV)/bin/gapkit sim runs/demo/synthetic --n 16 --preview runs/demo/sheet.png --overwrite
	@echo "benchmark report: runs/default-sim/report.md; contact sheet: runs/demo/sheet.png"

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/convert_bench.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
