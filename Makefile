# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Flink and Spark jobs are submitted from a second environment with Beam 2.62.0, the release whose
# job servers Maven Central serves to CI; the project's own Beam cannot be pinned to it (see
# setup.py and requirements-engines.txt). Built once per checkout; the job servers' jars are
# fetched by Maven into ~/.m2 on first use (tests/engines, datarax_beam/runners/jobserver.py).
ENGINES_VENV := .venv-engines
ENGINES_STAMP := $(ENGINES_VENV)/.installed
# e.g. make test PYTEST_ARGS='-m "not engines"' (skips the Flink/Spark tests; CI runs them all)
PYTEST_ARGS ?=
export JAX_PLATFORMS ?= cpu

.PHONY: install engines test test-fast demo bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) setup.py
	$(PY) -m pip install -q -e '.[test,demo,bench]'
	touch $(STAMP)

install: $(STAMP)

$(ENGINES_STAMP): $(STAMP) requirements-engines.txt tools/engines_env.py
	$(PY) tools/engines_env.py $(ENGINES_VENV)
	touch $(ENGINES_STAMP)

engines: $(ENGINES_STAMP)

test: $(STAMP) $(ENGINES_STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# everything but the Flink/Spark tests (no Java, Maven or second environment needed)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not engines" $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) examples/demo.py

bench: $(STAMP) $(ENGINES_STAMP)
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(PY) -m ruff check datarax_beam tests benchmarks examples tools

clean:
	rm -rf demo_output benchmarks/_work .pytest_cache
