# The README's two commands: `make demo` and `make test`. Everything they need is set up here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: venv tools lint unit coverage integration test demo bench lab manifests schema image e2e clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	@echo "make venv: creating $(VENV) and installing memfrag-agent with its test dependencies"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $@

tools:
	@bash tests/tools/host.sh
	@bash tests/tools/build.sh

PYDIRS := agent tests deploy $(wildcard bench lab)

lint: venv
	$(BIN)/ruff check $(PYDIRS)
	$(BIN)/ruff format --check $(PYDIRS)
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

unit: venv
	$(BIN)/pytest -q tests/unit

# Statements of agent/ covered by tests/unit alone: per module, then one line per room.
coverage: venv
	@mkdir -p out/coverage
	$(BIN)/pytest -q --cov --cov-report= tests/unit
	$(BIN)/coverage report
	@echo; printf '%-14s %6s %6s %6s\n' "room (unit)" Stmts Miss Cover
	@for room in $(patsubst %/__init__.py,%,$(wildcard agent/*/__init__.py)); do \
		$(BIN)/coverage report --include="$$room/*" \
			| awk -v room=$$room '/^TOTAL/ {printf "%-14s %6s %6s %6s\n", room, $$2, $$3, $$4}'; \
	done

integration: venv tools
	$(BIN)/pytest -q tests/integration

test: venv tools lint
	$(BIN)/pytest -q tests

demo: venv tools
	$(BIN)/python -m tests.cluster.demo --inject-kmsg $(DEMO_ARGS)

bench: venv tools
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The agent on a real Debian kernel in a qemu VM (root; see lab/README.md).
lab:
	$(PYTHON) lab/run.py $(LAB_ARGS)

manifests: tools
	deploy/generate.sh

# The chart's values schema (its `config` part) and the README's config table, from the model.
schema: venv
	$(BIN)/python -m agent.config.schema

image:
	docker build -t memfrag-agent:dev --build-arg REVISION="$$(git rev-parse HEAD)" \
		--build-arg CREATED="$$(git show -s --format=%cI HEAD)" .

e2e: venv tools
	$(BIN)/pytest -q -rs tests/e2e

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
