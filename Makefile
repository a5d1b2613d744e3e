# Two commands a newcomer needs: `make reproduce` (the whole study) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/reproduce
# Extra options for reproduce, e.g. ARGS="--quick" or ARGS="--data path/to/data_gsn.zip"
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install test test-fast reproduce quick lint bench clean

install: $(VENV)/.installed

# torch==2.13.0 is installed explicitly first: it is the CPU wheel; any looser spec may pull GBs of CUDA.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Test workers (pytest-xdist): one per core, at most 8, each a torch process with one thread (tests/conftest.py).
# WORKERS=0 runs the tests in this process, e.g. to debug one: make test WORKERS=0 PYTEST_ARGS="tests/test_cli.py -x".
WORKERS ?= auto
XDIST = -n $(WORKERS) --maxprocesses 8

test: install
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

reproduce: install
	$(BIN)/shapecount reproduce --out $(OUT) $(ARGS)

quick: install
	$(BIN)/shapecount reproduce --quick --out runs/quick --force $(ARGS)

bench: install
	$(BIN)/shapecount bench $(ARGS)

lint: install
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info
