# make tui   — set up (first time) and open the terminal UI
# make test  — set up (first time) and run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build that lies on this kind of machine; a GPU machine uses e.g. TORCH='torch --index-url https://download.pytorch.org/whl/cu128'
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup tui test train-demo
setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[train,dev]'
	touch $(STAMP)

tui: $(STAMP)
	$(BIN)/fer-tui $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)
