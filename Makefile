# Two commands do all setup on a fresh machine:
#   make run    # install (CPU) and run the main job on the embedded default
#   make test   # install (CPU) and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU users get the pinned CPU build of torch; GPU users: see README ("GPU install").
TORCH_SPEC ?= torch==2.13.0

.PHONY: install run test lint clean

$(BIN)/medgspo: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -c constraints-cpu.txt -e ".[dev]"
	@touch $@

install: $(BIN)/medgspo

run: install
	$(BIN)/medgspo pipeline

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
