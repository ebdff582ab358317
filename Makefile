# Two commands on a fresh machine: `make demo` and `make test`. Each makes .venv and installs
# what it needs first (Python packages from PyPI; the Kafka broker's jars come from Maven
# Central through docker/kafka-local.sh when the tests first need a broker).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-differential chromium lint typecheck bench kafka-start kafka-stop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shadowproxy demo

lint: $(STAMP)
	$(BIN)/ruff check shadowproxy addons tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Browser tests drive Debian's chromium through Playwright (never `playwright install`).
# Quiet and idempotent: installs only when no chromium is on PATH.
SUDO := $(shell test "$$(id -u)" -eq 0 || echo sudo)
chromium:
	@command -v chromium >/dev/null 2>&1 || \
		($(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: $(STAMP) chromium lint typecheck
	# known-vulnerable dependencies fail the build; no --ignore-vuln entries today. It needs PyPI's
	# JSON API: where only the package index is reachable it lists every package as not audited.
	$(BIN)/pip-audit --skip-editable --progress-spinner off
	$(BIN)/python -m pytest

# The JSON comparison's two stages against DeepDiff alone (tests/engine/test_diff_deepdiff.py)
# with thousands of drawn examples; `make test` runs a few hundred.
test-differential: $(STAMP)
	SHADOWPROXY_DIFFERENTIAL_EXAMPLES=5000 $(BIN)/python -m pytest tests/engine/test_diff_deepdiff.py -q -k two_stages --timeout 0

bench: $(STAMP)
	$(BIN)/python bench/run.py

kafka-start:
	./docker/kafka-local.sh start

kafka-stop:
	./docker/kafka-local.sh stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
