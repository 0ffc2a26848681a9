# `make test` and `make quickstart` work on a fresh clone: the virtual environment is
# created on first use and refreshed when setup.py changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stabn-installed

.PHONY: test venv

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e '.[dev,prep]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests
