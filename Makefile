# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.verge-installed
PYTEST_ARGS ?=

.PHONY: install system-deps demo test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests drive: Chromium (browser test), docker-compose (validates the
# compose file without an engine) and prometheus (its promtool checks /metrics and deploy/).
# Installed when missing and we are root; otherwise we say so.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing system packages:$$missing (sudo apt-get install$$missing); their tests will skip"; fi; \
	fi

demo: install
	$(BIN)/verge demo

test: install system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf var test-artifacts .pytest_cache
