# mi-widgets: the README's two commands are `make demo` and `make test`.
# Everything is set up from scratch on a fresh machine; nothing is assumed installed but
# python3 (3.10+), node/npm and apt (for chromium, browser tests only).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
JUPYTER_PORT ?= 8888
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_VERBOSITY ?= error

.PHONY: demo test env build js-deps chromium test-js test-py lint model wheel bench docs clean

## demo: environment + JS build, then JupyterLab on the tour notebook
demo: env
	$(VENV)/bin/jupyter lab notebooks/00_tour.ipynb --port=$(JUPYTER_PORT) $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

## test: every suite (TypeScript unit tests, Python unit + ground-truth tests, notebooks, browser e2e)
test: env chromium test-js test-py

# torch first and pinned: this machine serves a local CPU wheel of 2.13.0; an unpinned torch
# would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml js/package.json js/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(MAKE) build
	$(PIP) install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mi-widgets)" > /dev/null
	touch $@

env: $(VENV)/.installed

js-deps: js/node_modules/.package-lock.json
js/node_modules/.package-lock.json: js/package.json js/package-lock.json
	cd js && npm ci --no-audit --no-fund
	touch $@

## build: bundle js/src into mi_widgets/static (ESM for anywidget + IIFE for HTML export)
build: js-deps
	cd js && npm run build && node size.mjs

chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing Debian chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null; \
	fi
	@/usr/bin/chromium --version

test-js: js-deps
	cd js && npm run typecheck && npm test

lint: env
	$(VENV)/bin/ruff check mi_widgets tests benchmarks scripts

test-py: env chromium
	$(MAKE) lint
	@set +e; $(PY) -m pytest -q -p no:cacheprovider; rc=$$?; set -e; \
	if [ $$rc -eq 5 ]; then echo "FAIL: pytest collected no tests (exit 5)" >&2; exit 1; fi; \
	exit $$rc

## model: retrain the embedded model deterministically (2 threads, fixed seed) and re-measure it
model: env
	$(PY) -m mi_widgets.zoo.train
	$(PY) -m mi_widgets.zoo.measure tiny
	$(PY) -m mi_widgets.zoo.compiled

## wheel: a wheel carrying the built JS and the zoo (installs and renders without node)
wheel: build
	$(PIP) wheel . --no-deps -w dist

bench: env
	$(PY) benchmarks/run.py
	$(PY) scripts/gen_docs.py

## docs: rewrite the measured figures in README.md and docs/*.md from benchmarks/RESULTS.md and the zoo's records
docs: env
	$(PY) scripts/gen_docs.py

clean:
	rm -rf $(VENV) js/node_modules mi_widgets/static dist build
