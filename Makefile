# Two commands on a fresh machine: `make demo` and `make test`. Each makes .venv and installs
# what it needs first (Python packages from PyPI; the Kafka broker's jars come from Maven
# Central through docker/kafka-local.sh when the tests first need a broker).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck bench kafka-start kafka-stop clean

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

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py

kafka-start:
	./docker/kafka-local.sh start

kafka-stop:
	./docker/kafka-local.sh stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
