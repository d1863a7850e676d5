# Two commands do all the set-up on a fresh machine:
#   make fit    train TGN on the built-in synthetic stream (`mspipe fit`)
#   make test   run the test suite
# Both create .venv, install torch (CPU build, pinned) when no torch is present, then the package.

PYTHON ?= python3
VENV   ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin

.PHONY: install fit test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[dev]"

fit: install
	$(BIN)/mspipe fit

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) lightning_logs build *.egg-info
