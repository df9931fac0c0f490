# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export FIFTYONE_DO_NOT_TRACK := true
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test lint docs bench detector-vs-ert refine-bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: an open range would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# The main job: the strategy benchmark on simulated data, then the gaps of that data.
demo: setup
	$(VENV)/bin/gapkit benchmark
	$(VENV)/bin/gapkit sim runs/demo/synthetic --n 16 --preview runs/demo/sheet.png --overwrite
	$(VENV)/bin/gapkit gap report --a runs/default-sim-data/full/synthetic/manifest.jsonl \
		--b runs/default-sim-data/full/real_train/manifest.jsonl -o runs/demo/gap \
		--name-a synthetic --name-b real --overwrite
	@echo "benchmark report: runs/default-sim/report.md; gap report: runs/demo/gap/report.md; contact sheet: runs/demo/sheet.png"

# ruff, then the import contracts of pyproject.toml (the floors of the house).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

test: lint
	$(PY) -m pytest -q

# The documentation site (docs/, mkdocs.yml) into build/site; --strict: a broken link, anchor or
# reference fails the build. `.venv/bin/mkdocs serve` serves it while you write.
docs: setup
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict

bench: setup
	$(PY) benchmarks/convert_bench.py

# dlib's ERT trainer, the classic CPU anchor, in a side environment: never a gapkit dependency.
DLIB_VENV ?= .venv-dlib
$(DLIB_VENV)/.installed:
	$(PYTHON) -m venv $(DLIB_VENV)
	$(DLIB_VENV)/bin/pip install -q dlib-bin numpy
	touch $@

# gapkit's detector, one- and two-stage, against ERT on the 300-W training pool, with dlib's
# pretrained 68-point model as a reference row (needs ../shared/data; about 30 minutes on 2 cores).
detector-vs-ert: setup $(DLIB_VENV)/.models
	$(PY) benchmarks/detector_vs_ert.py --dlib-python $(DLIB_VENV)/bin/python --n 226,all --budget 8000 \
		--two-stage --dlib68

# The image-refined label adapter against dlib's pretrained 68-point model (needs ../shared/data).
# MediaPipe pins numpy<2 and protobuf<5, so it makes the pairs from a side environment too.
MP_VENV ?= .venv-mediapipe
$(MP_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(MP_VENV)
	$(MP_VENV)/bin/pip install -q mediapipe==0.10.21 pydantic typer rich pillow scipy
	$(MP_VENV)/bin/pip install -q --no-deps -e .
	touch $@

$(DLIB_VENV)/.models: $(DLIB_VENV)/.installed
	$(DLIB_VENV)/bin/pip install -q face-recognition-models
	touch $@

runs/pairs/mp468.jsonl: $(MP_VENV)/.installed
	$(MP_VENV)/bin/python examples/real_pairs_mediapipe.py ../shared/data/300w ../shared/data/300w_extra $@

refine-bench: setup $(DLIB_VENV)/.models runs/pairs/mp468.jsonl
	$(PY) benchmarks/refine_bench.py --pairs runs/pairs/mp468.jsonl --dlib-python $(DLIB_VENV)/bin/python --ert

clean:
	rm -rf $(VENV) $(MP_VENV) .pytest_cache build *.egg-info
