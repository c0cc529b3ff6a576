# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
PYTEST_ARGS ?=
export TEST_DATABASE_URL

.PHONY: run test test-sqlite test-postgres lint format clean venv bench bench-quick faults

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "taskrun needs Python 3.11 or newer")'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	touch $@

run: venv
	HOST=$(HOST) PORT=$(PORT) $(PY) manage.py serve

test: venv
	@$(PY) -m devtools.ci_prepare
	$(MAKE) --no-print-directory test-sqlite
	$(MAKE) --no-print-directory test-postgres

test-sqlite: venv
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

test-postgres: venv
	@if $(PY) -m devtools.pg_reachable "$(TEST_DATABASE_URL)"; then \
		DATABASE_URL="$(TEST_DATABASE_URL)" $(PY) -m pytest -n 2 $(PYTEST_ARGS); \
	elif [ "$$CI" = "true" ]; then \
		echo "PostgreSQL at $(TEST_DATABASE_URL) is not reachable; CI requires it"; exit 1; \
	else \
		echo "PostgreSQL at $(TEST_DATABASE_URL) is not reachable: skipping the PostgreSQL run"; \
	fi

# The benchmark suite (bench/, issue 11): the peers it compares taskrun with
# (Celery, its Redis client) are installed into .venv here, never by `make run`.
$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.txt
	$(PIP) install -q -r bench/requirements.txt
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) -m bench --out bench/RESULTS.md

bench-quick: $(VENV)/.bench-installed
	$(PY) -m bench --quick

# Every fault-injection scenario (tests/faults) at full length; writes
# docs/reliability.md. Needs root for the network namespace scenario.
faults: venv
	$(PY) -m devtools.faults

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) var/test test-output
