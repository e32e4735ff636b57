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

.PHONY: install demo test test-fast data models benchmarks clean-venv

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(BIN)/python -c "import opsef_core, cellpose, stardist, torch, tensorflow" 
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## Install, then run the quickstart config on the bundled demo data; prints the run folder.
demo: install
	$(BIN)/opsef demo

## Install, then run the whole test suite (slow tests included).
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Tests without the slow ones (for quick iterations).
test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## Regenerate demo_data/ (deterministic, seeded).
data: install
	$(BIN)/python demo_data/make_demo_data.py

## Retrain the small demo models under models/ from demo_data/.
models: install
	$(BIN)/python scripts/train_demo_models.py

benchmarks: install
	for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
