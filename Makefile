# `make run`  : create .venv, install, initialise on first run (prints the API key once), serve.
# `make test` : install dev tools, then ruff, mypy and pytest on SQLite and on PostgreSQL.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PG_DSN ?= postgresql://postgres@127.0.0.1:5432

.PHONY: run install dev test lint typecheck test-sqlite test-postgres bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

run: install
	$(BIN)/postroute init --if-needed
	$(BIN)/postroute serve

lint: dev
	$(BIN)/ruff check src tests bench

typecheck: dev
	$(BIN)/mypy

test-sqlite: dev
	POSTROUTE_TEST_DATABASE=sqlite $(BIN)/pytest

test-postgres: dev
	POSTROUTE_TEST_DATABASE=postgresql POSTROUTE_TEST_PG=$(PG_DSN) $(BIN)/pytest

test: lint typecheck test-sqlite test-postgres

clean:
	rm -rf $(VENV) build src/*.egg-info
