# `make run`  : create .venv, install, initialise on first run (prints the API key once), serve.
# `make test` : install dev tools, then ruff, mypy and pytest on SQLite and on PostgreSQL
#               (Python of PYTHON), and pytest on SQLite again under Python 3.13 (.venv-3.13).
# Python 3.11, 3.12 or 3.13: `make run PYTHON=python3.12` picks one. A .venv made by another
# Python, or broken (its Python gone, no pip), is made again by any target that uses it.
# Python 3.13 for `make test`: python3.13 on PATH, else pyenv's; or `make test PY313=/path`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
VENV313 := .venv-3.13
PG_DSN ?= postgresql://postgres@127.0.0.1:5432
# The first Python 3.13 that runs (pyenv's shim for python3.13 exists but fails unless selected).
PY313 ?= $(shell for p in python3.13 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1 \
	&& { command -v "$$p"; break; }; done)
PYINFO := import sys; print("%d.%d" % sys.version_info[:2], sys.base_prefix)

.PHONY: run install dev venv test lint typecheck test-sqlite test-postgres test-py313 bench clean

# $(call venv,PYTHON,DIR): DIR is a virtualenv of PYTHON (3.11 to 3.13) whose Python runs and
# that has pip; otherwise it is made again.
define venv
	@want=$$("$(1)" -c '$(PYINFO)' 2>/dev/null) || { echo "make: cannot run '$(1)': \
	install Python 3.11, 3.12 or 3.13, or name one: make PYTHON=/path/to/python3.x" >&2; exit 1; }; \
	case "$${want%% *}" in 3.11|3.12|3.13) ;; *) echo "make: '$(1)' is Python $${want%% *}; \
	Postroute needs 3.11, 3.12 or 3.13: make PYTHON=python3.12 (say)" >&2; exit 1;; esac; \
	have=$$($(2)/bin/python -c '$(PYINFO)' 2>/dev/null); \
	if [ "$$have" != "$$want" ] || [ ! -x $(2)/bin/pip ]; then \
	  if [ -e $(2) ]; then echo "make: $(2) is not a working virtualenv of $(1) ($$want): \
	it has $${have:-no Python that runs}$$([ -x $(2)/bin/pip ] || echo ', no pip'): making it \
	again"; rm -rf $(2); fi; \
	  "$(1)" -m venv $(2) || { rm -rf $(2); echo "make: '$(1) -m venv' failed \
	(Debian/Ubuntu: apt install python3-venv)" >&2; exit 1; }; \
	  $(2)/bin/python -m pip install -q --upgrade pip; \
	fi
endef

venv:
	$(call venv,$(PYTHON),$(VENV))

install: venv
	$(BIN)/pip install -q -e .

dev: venv
	$(BIN)/pip install -q -e '.[dev]'

run: install
	$(BIN)/postroute init --if-needed
	$(BIN)/postroute serve

lint: dev
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

typecheck: dev
	$(BIN)/mypy

test-sqlite: dev
	POSTROUTE_TEST_DATABASE=sqlite $(BIN)/pytest

test-postgres: dev
	POSTROUTE_TEST_DATABASE=postgresql POSTROUTE_TEST_PG=$(PG_DSN) $(BIN)/pytest

# The newest supported Python, SQLite only (the rest of the suite does not depend on it).
# No Python 3.13 is an error, not a skip: say where it is with PY313=.
test-py313:
	@if [ -z "$(PY313)" ]; then echo "make: no Python 3.13 found (python3.13 on PATH, or \
	$${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13): install it (apt install \
	python3.13, or pyenv install 3.13), or name it: make test PY313=/path/to/python3.13" >&2; \
	exit 1; fi
	$(call venv,$(PY313),$(VENV313))
	$(VENV313)/bin/pip install -q -e '.[dev]'
	POSTROUTE_TEST_DATABASE=sqlite $(VENV313)/bin/pytest

test: lint typecheck test-sqlite test-postgres test-py313

clean:
	rm -rf $(VENV) $(VENV313) build src/*.egg-info
