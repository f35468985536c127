# Gradient Flow: two commands do everything on a fresh machine.
#   make book   - set up .venv, install pinned requirements and MathJax, build _build/html
#   make test   - same set-up, then lib unit tests, nbval on every notebook, strict build, browser check
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
# One torch thread per process: the chapters use small tensors, where a second
# thread only adds synchronisation, and tests run two kernels side by side on
# two cores, where two threads each make them thrash (10-100x slower under load).
export OMP_NUM_THREADS ?= 1

.PHONY: book test unit notebooks build browser bench lab clean help
help:
	@echo "make book   build the HTML book into _build/html"
	@echo "make test   run every test: lib unit tests, notebooks (nbval), strict build, browser check"
	@echo "make bench  time every notebook and the probes"
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

book: setup
	rm -rf _build/html _build/jupyter_execute _build/.doctrees _build/.jupyter_cache
	TQDM_DISABLE=1 $(BIN)/jupyter-book build -W --keep-going .
	@echo "Book built: $(CURDIR)/_build/html/index.html"

unit: setup
	$(BIN)/python -m pytest -q -n $(JOBS) tests --ignore=tests/test_browser.py

# nbval collects .ipynb only: export every notebook in _toc.yml to _build/nbtest, then re-execute.
notebooks: setup
	rm -rf _build/nbtest
	$(BIN)/python scripts/export_notebooks.py _build/nbtest
	TQDM_DISABLE=1 $(BIN)/python -m pytest -q $(if $(filter 1,$(JOBS)),,-n $(JOBS) --dist loadfile) --nbval-lax _build/nbtest

browser: setup
	$(BIN)/python -m pytest -q tests/test_browser.py

# The book build executes notebooks one at a time, so nbval runs beside it on the
# second core (JOBS=1) instead of after it; -O keeps each one's output together.
test: setup
	rm -rf _build
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory -j2 -O JOBS=1 notebooks book
	$(MAKE) --no-print-directory browser

bench: setup
	$(BIN)/python benchmarks/bench_notebooks.py
	$(BIN)/python benchmarks/bench_probes.py

# JupyterLab is not needed to build or test, so it is installed only on demand.
# The override makes .md chapters open as notebooks (jupytext), as on Binder.
lab: setup
	$(BIN)/python -m pip install -q jupyterlab==4.6.6
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp binder/jupyterlab-overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	$(BIN)/jupyter lab book/

clean:
	rm -rf _build
