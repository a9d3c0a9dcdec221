# aiservice: two commands. `make run` sets up and starts the service; `make test` proves it works.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FUZZ_EXAMPLES ?= 200
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint format fuzz bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@# A local CPU build of the pinned torch, where pip's find-links hold one, so the resolver cannot
	@# swap in the CUDA build from the index (gigabytes, and its triton crashes torch.export here).
	-$(BIN)/pip install --quiet --no-index --no-deps 'torch==2.13.0' 2>/dev/null
	$(BIN)/pip install --quiet -e '.[test,all]'
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP) ## set up and start the API on 0.0.0.0:3004 (SQLite and artifacts under ./var)
	$(BIN)/aiservice serve

lint: $(STAMP) ## ruff (lint and format check), mypy --strict, import-linter layering contracts, hadolint (deploy/Dockerfile), actionlint (.github/workflows)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint deploy/Dockerfile
	$(BIN)/actionlint

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

test: lint ## lint, then the whole suite with line coverage (PostgreSQL tests skip locally without a server, fail under CI=true)
	@# tests/ui drive Debian's Chromium (Playwright cannot download a browser here); idempotent
	@# a miss here is not fatal: the browser tests then skip locally and fail under CI=true
	-command -v chromium >/dev/null || apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)
	$(BIN)/pytest -n 2 --dist loadgroup --durations=25 --cov=aiservice --cov-report=term:skip-covered --cov-fail-under=85

fuzz: $(STAMP) ## schemathesis against /openapi.json, FUZZ_EXAMPLES (default 200) cases per operation, both databases
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -n 2 -m fuzz tests/fuzz

bench: $(STAMP) ## performance figures: registry throughput and 1 GB upload
	$(BIN)/python bench/registry.py

bench-quick: $(STAMP) ## the same benchmarks, small enough for a smoke run
	$(BIN)/python bench/registry.py --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
