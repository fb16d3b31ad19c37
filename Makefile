# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both create or reuse .venv and install the project with every pip call constrained by
# constraints.txt (torch==2.13.0 there keeps pip on the small CPU wheel).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PIP_CONSTRAINT := $(abspath constraints.txt)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup test demo lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[all,dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	sh scripts/ensure-chromium.sh
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/spikevimformer demo

lint: setup
	$(VENV)/bin/ruff check spikevimformer tests benchmarks

bench: setup
	$(PY) benchmarks/inference.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
