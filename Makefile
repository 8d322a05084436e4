# The verbs a person types. `make run` brings up the whole stack on the tiny model with a demo;
# `make test` sets up a fresh machine and runs every check CI runs.
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PYTEST_ARGS ?=

.PHONY: setup run up demo test test-all lint proto proto-check bench helm loadtest clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml sdk/python/pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

run: setup
	$(BIN)/mimo-serve up --demo

up: setup
	$(BIN)/mimo-serve up

demo: setup
	$(BIN)/mimo-serve demo

proto: setup
	$(PY) scripts/gen_proto.py

proto-check: setup
	$(PY) scripts/gen_proto.py --check

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services operators loadtest
	$(BIN)/lint-imports

test: setup proto-check lint
	$(BIN)/pytest $(PYTEST_ARGS)

test-all: setup
	$(BIN)/pytest -m "" $(PYTEST_ARGS)

bench: setup
	@for part in tokenizer verifier sim engine router rollout autoscaler; do \
		echo "== mimo-serve bench $$part"; $(BIN)/mimo-serve bench $$part || exit 1; done

helm: setup
	$(BIN)/pytest tests/helm

loadtest: setup
	$(PY) -m loadtest $(LOADTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
