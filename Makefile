# swiftlib — `make demo` and `make test` are the two set-up commands; both create .venv
# when it is missing (idempotent: a stamp file skips the install when nothing changed).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
STAMP := $(VENV)/.swiftlib-installed
PYTEST_ARGS ?=

.PHONY: demo test test-slurm test-browser bench science kernel lab notebooks lint venv clean-venv dashboard

venv: $(STAMP)

# torch first (the CPU wheel: an unpinned torch pulls a multi-GB CUDA build), then DeepSpeed
# without CUDA ops and without build isolation (so its build sees that torch), then the rest
# constrained to the tested versions so nothing upgrades torch.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install -c constraints.txt torch
	DS_BUILD_OPS=0 $(PIP) install --no-build-isolation -c constraints.txt deepspeed
	$(PIP) install -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/swiftlib demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# a real single-node SLURM cluster on 127.0.0.1 (root; installs Debian slurm + munge if missing)
test-slurm: $(STAMP)
	$(PY) -m pytest -q -m slurm tests/test_slurm.py $(PYTEST_ARGS)

# JupyterLab rendered in headless Chromium (Debian chromium, apt-get installed as root when missing)
test-browser: $(STAMP)
	$(PY) -m pytest -q -m browser tests/test_browser.py $(PYTEST_ARGS)

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; OMP_NUM_THREADS=2 $(PY) $$b || exit 1; done

science: $(STAMP)
	$(PY) -m pytest -q -m slow --timeout=0 tests

# the Jupyter kernel "swiftlib" (what every notebook asks for) for .venv: a user kernelspec
# whose helper script activates the environment (NERSC's pattern; docs/nersc.md). On NERSC:
# swiftlib kernel install --env $CONDA_PREFIX --module conda
kernel: $(STAMP)
	$(PY) -m swiftlib.kernel install --force --name swiftlib --env $(abspath $(VENV))

# served from the repository root so jupytext finds jupytext.toml: a save writes the .ipynb
# and its py:percent twin (jupytext's JupyterLab extension comes with the jupytext package)
lab: kernel
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks

# after editing a notebook (in JupyterLab or its .py twin): sync each pair, strip outputs,
# check the notebook rules (docs/notebooks.md)
notebooks: $(STAMP)
	$(PY) tools/sync_notebooks.py

lint: $(STAMP)
	$(VENV)/bin/ruff check swiftlib brainmarks tests benchmarks tools notebooks

clean-venv:
	rm -rf $(VENV)

# Live view of an Optuna study (tuning notebook / SLURM workers): make dashboard STUDY=<file or URL>
# (a .db SQLite file, a .log journal file, or a database URL). Needs `pip install optuna-dashboard`.
STUDY_URL = $(if $(findstring ://,$(STUDY)),$(STUDY),$(if $(filter %.log %.journal %.jsonl,$(STUDY)),$(patsubst journal:%,%,$(STUDY)),sqlite:///$(abspath $(STUDY))))
dashboard:
	@test -n "$(STUDY)" || { echo "usage: make dashboard STUDY=papermill_runs/tune/optuna.db  (a .db, a .log journal or a URL)"; exit 2; }
	@if test -x $(VENV)/bin/optuna-dashboard; then $(VENV)/bin/optuna-dashboard --host 127.0.0.1 --port $${PORT:-8080} "$(STUDY_URL)"; \
	else echo "optuna-dashboard is not installed: $(PY) -m pip install optuna-dashboard, then run"; \
	     echo "  $(VENV)/bin/optuna-dashboard --port 8080 $(STUDY_URL)"; exit 1; fi
