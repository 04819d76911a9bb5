# Two commands do all the set-up on a fresh machine:
#   make demo   runs the example fleet on an embedded Redis and worker
#   make test   runs the whole suite (lint, types, tests)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup demo test lint typecheck unit bench bench-quick clis redis-server clean

setup: $(STAMP) redis-server clis

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

# The tests and the embedded default start private redis-server processes.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

# The claude and opencode CLIs, pinned in tools/package-lock.json, into .agentfleet/tools.
clis:
	@bash scripts/install-clis.sh

demo: setup
	@code=0; env -u AGENTFLEET_REDIS_URL $(BIN)/agentfleet run examples/demo.yaml || code=$$?; \
	  test $$code -eq 3 || { echo "demo: expected exit 3 (partial), got $$code"; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest

test: setup lint typecheck unit

bench: setup
	$(BIN)/python -m bench

bench-quick: setup
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .agentfleet .pytest_cache .mypy_cache .ruff_cache
