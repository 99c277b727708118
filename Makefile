# The two commands of a fresh machine: `make tune` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test tune lint clean

install: $(STAMP)

# Idempotent: re-runs only when the requirements change. pip (not uv/poetry) so that the
# torch wheels on local disk are used.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Two workers, a test file each at a time (a module's Ray and its fixtures stay on one
# worker): most of the suite waits on subprocesses, servers and faults, so a 2-core
# machine runs it in about two thirds of the time of one process. PYTEST_ARGS= for one.
PYTEST_ARGS ?= -n 2 --dist loadfile

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

tune: install
	$(VENV)/bin/tune-smpl tune --time-budget 200 $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
