# Two commands for a fresh machine:  make demo  (set up + render the bundled example)
#                                    make test  (set up + run every test)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned: on CPU-only machines this is the CPU build. On cuda/mps machines,
# override it (e.g. make setup TORCH=torch) or install your own build before `make setup`.
TORCH ?= torch==2.13.0

.PHONY: setup demo test protos lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/talkinghead demo --out out/demo.mp4

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

protos: setup
	$(BIN)/python protos/generate.py

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf out build dist *.egg-info .pytest_cache
