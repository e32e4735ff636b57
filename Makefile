# opsef — set-up and main jobs. `make demo` and `make test` are the two commands in README.md.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.opsef-installed
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
export MPLBACKEND ?= Agg
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST_ARGS ?=
## the pins installed: requirements.lock (CPU, the default) or requirements-gpu.lock (CUDA, docs/gpu.md)
LOCK   ?= requirements.lock

.PHONY: install chromium demo test test-fast data models benchmarks clean-venv

install: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r $(LOCK) 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(BIN)/python -c "import opsef_core, cellpose, stardist, torch, tensorflow" 
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## Install, then run the quickstart config on the bundled demo data; prints the run folder.
demo: install
	$(BIN)/opsef demo

## Debian's Chromium for tests/test_browser.py (Playwright's own browser downloads are not possible here):
## installed with apt-get when `chromium` is absent. Outside CI a failed install only warns (the browser
## test then skips); in CI (CI=true) it stops the run.
CHROMIUM_APT := DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo -n) apt-get
chromium:
	@command -v chromium >/dev/null && exit 0; \
	echo "installing Debian's chromium (apt-get) for the browser test"; \
	$(CHROMIUM_APT) install -y -qq chromium >/dev/null \
	  || { $(CHROMIUM_APT) update -qq && $(CHROMIUM_APT) install -y -qq chromium >/dev/null; } \
	  || { if [ "$${CI:-}" = true ]; then echo "error: could not install chromium" >&2; exit 1; fi; \
	       echo "warning: could not install chromium: tests/test_browser.py will be skipped" >&2; }

## Install, then run the whole test suite (slow tests included; the browser test needs chromium).
test: install chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Tests without the slow ones (for quick iterations).
test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## Regenerate demo_data/ (deterministic, seeded).
data: install
	$(BIN)/python demo_data/make_demo_data.py

## Retrain the small demo models under models/ from demo_data/.
models: install
	$(BIN)/python scripts/train_demo_models.py --only stardist2d --only cellpose --only unet
	$(BIN)/python scripts/train_3d_models.py --replace
	$(BIN)/python scripts/train_spheroid_model.py
	$(BIN)/opsef models cards

benchmarks: install
	for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
