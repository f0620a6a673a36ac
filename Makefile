# Two commands do all setup on a fresh machine:
#   make run    # install (CPU) and run the main job on the embedded default
#   make test   # install (CPU) and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU users get the pinned CPU build of torch; GPU users: see README ("GPU install").
TORCH_SPEC ?= torch==2.13.0
# Every install goes through the pins the suite passed with (build environments included); `make pins` refreshes them.
PINS := $(CURDIR)/constraints-cpu.txt
PIP := PIP_CONSTRAINT=$(PINS) $(BIN)/pip
# llama.cpp's bindings and converter, for the GGUF tests (`medgspo export --gguf`); compiled once (~4 min on 2 cores).
LLAMA_CPP_DIR ?= .cache/llama.cpp
LLAMA_CPP := $(LLAMA_CPP_DIR)/convert_hf_to_gguf.py

.PHONY: install run test lint clean pins

$(BIN)/medgspo: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/medgspo

run: install
	$(BIN)/medgspo pipeline

$(LLAMA_CPP): $(BIN)/medgspo scripts/get_llama_cpp.sh
	PIP_CONSTRAINT=$(PINS) PYTHON=$(BIN)/python bash scripts/get_llama_cpp.sh $(LLAMA_CPP_DIR)

test: install $(LLAMA_CPP)
	LLAMA_CPP_DIR=$(LLAMA_CPP_DIR) $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# Upgrade every dependency in a throwaway venv, run the suite, and rewrite constraints-cpu.txt if it passes.
pins:
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" bash scripts/refresh-pins.sh

clean:
	rm -rf $(VENV) .venv-pins runs .pytest_cache .cache
