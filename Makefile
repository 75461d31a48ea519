# Literature AI Gateway. `make help` lists the targets.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo serve test test-unit test-integration lint format bench bench-fulltext chaos check-config clean lock

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the service and its dev tools (pinned by constraints.txt)

demo: $(STAMP) ## Start the sandbox and the service, run a fallback scenario, print a summary
	$(BIN)/python -m app demo

serve: $(STAMP) ## Run the service (HOST, PORT and provider keys from the environment)
	$(BIN)/python -m app serve

check-config: $(STAMP) ## Print the effective configuration, secrets masked
	$(BIN)/python -m app check-config

test: $(STAMP) ## Run every test: unit, integration (against the sandbox), fuzz, chaos suite
	$(BIN)/python -m pytest -q

test-unit: $(STAMP) ## Unit tests only
	$(BIN)/python -m pytest -q tests/unit

test-integration: $(STAMP) ## Integration tests only
	$(BIN)/python -m pytest -q tests/integration

chaos: $(STAMP) ## Run the chaos suite and print its table (SCENARIO=name for one, CHAOS_SOAK=1 longer)
	$(BIN)/python -m pytest tests/chaos -q -p no:randomly -rfE $(if $(SCENARIO),-k '$(SCENARIO)',)

lint: $(STAMP) ## ruff check, ruff format --check, mypy --strict on app/
	$(BIN)/ruff check app tests infra bench
	$(BIN)/ruff format --check app tests infra bench
	$(BIN)/mypy

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix app tests infra bench
	$(BIN)/ruff format app tests infra bench

bench: $(STAMP) ## Gateway overhead and throughput against the sandbox (prints a table)
	$(BIN)/python -m bench.gateway_overhead

bench-fulltext: $(STAMP) ## Full-text heuristics on the labelled development set (confusion table, precision, recall)
	$(BIN)/python -m bench.fulltext_quality

lock: ## Re-pin constraints.txt from a fresh resolve of pyproject.toml
	rm -rf /tmp/lock-venv && $(PYTHON) -m venv /tmp/lock-venv
	/tmp/lock-venv/bin/pip install --quiet -e '.[dev]'
	/tmp/lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
