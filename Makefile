# Gradient Flow: two commands do everything on a fresh machine.
#   make book   - set up .venv, install pinned requirements and MathJax, build _build/html
#   make test   - same set-up, then ruff, lib unit tests, the strict book build (base seed)
#                 beside nbval on every notebook under a second base seed, the
#                 no-stderr check of the executed notebooks, browser check
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MATHJAX_VERSION := 3.2.2
MATHJAX := .cache/mathjax/node_modules/mathjax/es5/tex-mml-chtml.js
# The interactive figures' JavaScript (vega, vega-lite, vega-embed) comes from npm
# too, pinned, and the book serves it itself (_ext/interactive.py): no CDN.
VEGA_PACKAGES := vega@6.4.0 vega-lite@6.5.0 vega-embed@7.3.0
VEGA := .cache/vega/node_modules/vega-embed/build/vega-embed.min.js
JOBS ?= 2
# The base seed nbval runs the notebooks under in `make test` (the book build
# uses the default, lib.seeds.DEFAULT_BASE_SEED): every assert must hold under both.
TEST_SEED ?= 1
# One torch thread per process: the chapters use small tensors, where a second
# thread only adds synchronisation, and tests run two kernels side by side on
# two cores, where two threads each make them thrash (10-100x slower under load).
export OMP_NUM_THREADS ?= 1
# Python may write lib's bytecode (__pycache__, git-ignored): some machines set
# PYTHONDONTWRITEBYTECODE, and then every notebook kernel recompiles lib from
# source (0.3 s each, 4 s CPU per build).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: book test unit notebooks build browser bench lab clean help lint lint-notebooks stderr
help:
	@echo "make book   build the HTML book into _build/html (notebooks executed on $(JOBS) cores)"
	@echo "make test   run every test: ruff, lib unit tests, strict build + nbval (GF_SEED=$(TEST_SEED)), stderr, browser"
	@echo "make bench  time a clean book build, every notebook (CPU and wall) against the floor, the probes"
	@echo "make lab    open the chapters as notebooks in JupyterLab"

# Set-up is idempotent: it reinstalls only when requirements.txt or pyproject.toml change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

# MathJax comes from the npm registry, so the built book renders math offline.
$(MATHJAX):
	npm install --silent --no-audit --no-fund --no-save --prefix .cache/mathjax mathjax@$(MATHJAX_VERSION)
	test -f $@

$(VEGA):
	npm install --silent --no-audit --no-fund --no-save --prefix .cache/vega $(VEGA_PACKAGES)
	test -f $@

setup: $(STAMP) $(MATHJAX) $(VEGA)
.PHONY: setup

# `jupyter-book build -W --keep-going .` with Sphinx reading (= executing) the
# notebooks in $(JOBS) processes; -W and raise_on_error hold as before, and every
# notebook is executed afresh (execute_notebooks: force, and _build is cleared).
book: setup
	rm -rf _build/html _build/jupyter_execute _build/.doctrees _build/.jupyter_cache
	TQDM_DISABLE=1 $(BIN)/python scripts/build_book.py --jobs $(JOBS) -W --keep-going .
	@echo "Book built: $(CURDIR)/_build/html/index.html"

# ruff: lint and import order of lib/, tests/, scripts/, benchmarks/ (pyproject.toml).
lint: setup
	$(BIN)/ruff check .

# Code a reader sees fits the page: every visible code-cell line <= 80 characters
# (cells tagged remove-cell, remove-input or hide-input are not shown, so not checked).
lint-notebooks: setup
	rm -rf _build/visible
	$(BIN)/python scripts/export_notebooks.py --visible _build/visible
	@# _build is git-ignored and in ruff's default excludes: without these two flags
	@# ruff finds no file there and passes having checked nothing.
	$(BIN)/ruff check --isolated --no-cache --no-respect-gitignore --exclude .git \
	  --select E501 --line-length 80 _build/visible

unit: setup
	$(BIN)/python -m pytest -q -n $(JOBS) tests --ignore=tests/test_browser.py \
	  --ignore=tests/test_notebook_stderr.py

# nbval collects .ipynb only: export every notebook in _toc.yml to _build/nbtest, then
# re-execute them under base seed TEST_SEED (the book build covers the default seed).
notebooks: setup
	rm -rf _build/nbtest
	$(BIN)/python scripts/export_notebooks.py _build/nbtest
	GF_SEED=$(TEST_SEED) TQDM_DISABLE=1 $(BIN)/python -m pytest -q $(if $(filter 1,$(JOBS)),,-n $(JOBS) --dist loadfile) --nbval-lax _build/nbtest

# No executed notebook of the last book build wrote to stderr (a warning a reader would see).
stderr: setup
	GF_REQUIRE_BUILD=1 $(BIN)/python -m pytest -q tests/test_notebook_stderr.py

browser: setup
	$(BIN)/python -m pytest -q tests/test_browser.py

# ruff (lib and the notebooks' visible lines), the unit tests, the strict book build (default seed) and nbval (seed
# TEST_SEED) run side by side, so both cores stay busy from start to end; -O keeps
# each one's output together. The stderr and browser checks read the finished build.
test: setup
	rm -rf _build
	$(MAKE) --no-print-directory -j5 -O lint lint-notebooks unit notebooks book
	$(MAKE) --no-print-directory stderr
	$(MAKE) --no-print-directory browser

# A clean book build timed as `make book` runs it, then each notebook alone (CPU and
# wall) against the floor; then the probes' and the seed population's overheads.
bench: setup
	$(BIN)/python benchmarks/bench_notebooks.py --book
	$(BIN)/python benchmarks/bench_probes.py
	test ! -f benchmarks/bench_population.py || $(BIN)/python benchmarks/bench_population.py

# JupyterLab is not needed to build or test, so it is installed only on demand.
# The override makes .md chapters open as notebooks (jupytext), as on Binder.
lab: setup
	$(BIN)/python -m pip install -q jupyterlab==4.6.6
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp binder/jupyterlab-overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	$(BIN)/jupyter lab book/

clean:
	rm -rf _build
