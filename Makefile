# The README's two commands are `make demo` and `make test`; .ci/run calls `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOME_DIR ?= mysimbdp-demo

.PHONY: demo test lint bench bench-formats bench-big bench-sandbox bench-reads bench-uploads install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mysimbdp needs Python 3.11+; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

## demo: install into .venv and run the platform's main job on the embedded default (SQLite)
demo: $(STAMP)
	MYSIMBDP_LOG_LEVEL=error $(BIN)/mysimbdp --home $(HOME_DIR) demo --examples examples/tenants

## test: install into .venv and run the whole test suite (lint, types, tests)
test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

## bench: the batch, stream and file-format benchmarks (see docs/performance.md); not part of the tests
bench: $(STAMP)
	$(BIN)/python bench/batch.py
	$(BIN)/python bench/stream.py
	$(BIN)/python bench/formats.py

## bench-formats: the same rows as plain CSV, gzip, zstd and Parquet, end to end, and the decompressors and readers alone
bench-formats: $(STAMP)
	$(BIN)/python bench/formats.py

## bench-sandbox: the tenant-app sandbox's cost: app start and batch rows/s, confined vs unconfined
bench-sandbox: $(STAMP)
	$(BIN)/python bench/sandbox.py

## bench-reads: write modes and reads: merge vs append ingest, NDJSON export via the API vs raw SELECT, filtered query latency
bench-reads: $(STAMP)
	$(BIN)/python bench/reads.py

## bench-uploads: a 1 GB CSV over loopback: POST /v1/files vs a bare endpoint, tus uninterrupted vs killed twice (~3 min, ~6 GB free)
bench-uploads: $(STAMP)
	$(BIN)/python bench/uploads.py

## bench-big: big files in chunks (100 MB, 1 GB, 5 GB generated on the fly; needs ~12 GB free) and 1/2/4 workers
bench-big: $(STAMP)
	$(BIN)/python bench/bigfile.py
	$(BIN)/python bench/scale.py

clean:
	rm -rf $(VENV) $(HOME_DIR) .pytest_cache .mypy_cache .ruff_cache
