# The two commands a user needs: `make run` and `make test`. Everything they need is installed
# by them: a virtualenv in .venv, JVM artifacts (cached in $(QUESTLOG_CACHE)), and the system
# tools Maven and Apache Bench if they are missing.
PYTHON ?= python3
VENV := .venv
QUESTLOG_CACHE ?= $(HOME)/.cache/questlog
export QUESTLOG_CACHE
export PIP_CACHE_DIR := $(QUESTLOG_CACHE)/pip
STAMP := $(VENV)/.installed

.PHONY: run stop test lint install tools fetch clean bench faults

run: install
	$(VENV)/bin/questlog run

stop:
	@if [ -x $(VENV)/bin/questlog ]; then $(VENV)/bin/questlog stop; else echo "nothing installed, nothing running"; fi

# Two pytest-xdist workers: the integration and end-to-end tests on one (they share the session's
# one pipeline, in order), the unit tests on the other meanwhile (tests/conftest.py groups them).
test: install lint
	$(VENV)/bin/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# Style, types and the architecture, settled in pyproject.toml: lint (pyflakes, bugbear, ...),
# formatting, mypy, and import-linter's contracts (a stage imports only the core).
# `ruff format .` fixes the formatting.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache --no-logo

install: $(STAMP) tools

$(STAMP): setup.cfg pyproject.toml
	@echo "questlog: installing Python dependencies into $(VENV) (pip cache: $(PIP_CACHE_DIR))"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q --upgrade pip
	$(VENV)/bin/pip install --disable-pip-version-check --progress-bar off -e '.[test]'
	touch $(STAMP)

# Maven fetches the JVM artifacts; Apache Bench is the seed's load generator; PostgreSQL (Debian's
# build, run by ops/stack/postgres.py) holds the Iceberg catalog.
tools:
	@missing=""; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v ab >/dev/null || missing="$$missing apache2-utils"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jdk-headless"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql-15"; \
	if [ -n "$$missing" ]; then \
	  echo "questlog: installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# Every stage against its baseline in one run, on a pipeline of its own (.questlog-bench/, ports
# shifted by 20000): `make bench`, or one case: `make bench CASE=router` (SIZE=tiny for a quick check).
CASE ?= all
SIZE ?= full
BENCH_STAMP := $(VENV)/.bench-installed

bench: install $(BENCH_STAMP)
	$(VENV)/bin/python -m benchmarks --case $(CASE) --size $(SIZE)

$(BENCH_STAMP): setup.cfg pyproject.toml
	$(VENV)/bin/pip install --disable-pip-version-check --progress-bar off -e '.[test,bench]'
	touch $(BENCH_STAMP)

fetch: install
	$(VENV)/bin/questlog fetch

clean: stop
	rm -rf .questlog

# The fault suite at full size on a stack of its own (.questlog-faults/): every service killed or
# paused in turn while a client sends; prints the table and writes benchmarks/results/faults.md.
FAULT_EVENTS ?= 100000
faults: install
	$(VENV)/bin/python -m ops.faults --events $(FAULT_EVENTS)
