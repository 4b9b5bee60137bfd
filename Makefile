# `make test` is the project's test command (README, CI). `make install` sets up .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test lint format
install:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-cpu.txt -e ".[dev]"

test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check .
format:
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .
