# snapsync developer commands. `make test` works on a fresh machine: it builds the virtual
# env, installs the package with its test extras and the storage servers the tests start.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test lint demo bench bench-full clean pyc

install: $(STAMP) pyc

$(STAMP): pyproject.toml scripts/install-test-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	bash scripts/install-test-deps.sh $(VENV)
	touch $(STAMP)

# Bytecode for snapsync's own modules, as pip writes it for an installed wheel. The editable
# install leaves none, and with PYTHONDONTWRITEBYTECODE set (as on the machines these
# sessions run on) every `snapsync` start compiled ~60 modules: ~70 ms of a 0.5 s no-op push
# at 100k files. Stale files are rewritten; fresh ones are left alone (a few ms).
pyc: $(STAMP)
	$(PY) -m compileall -q snapsync

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check snapsync tests benchmarks scripts

demo: install
	$(PY) scripts/demo.py

bench: install
	bash scripts/install-bench-deps.sh
	$(PY) -m benchmarks --quick

bench-full: install
	bash scripts/install-bench-deps.sh
	$(PY) -m benchmarks --full

clean:
	rm -rf .demo .pytest_cache build *.egg-info
