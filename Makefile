# Everything from nothing: `make demo` shows rabbitflow working, `make test` runs the tests.
# Both create the virtualenv and make sure a local RabbitMQ answers first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: venv broker browser-deps demo test test-fast lint format clean asyncapi-parser

venv: $(STAMP)

# Reinstall when pyproject.toml changes (new dependencies).
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

broker:
	bash scripts/ensure-broker.sh

# Debian's chromium for the dashboard's browser tests (Playwright drives it; it never
# downloads a browser of its own). Needs root with apt-get when chromium is missing.
browser-deps:
	bash scripts/ensure-chromium.sh

# The AsyncAPI export is checked by the official parser (npm @asyncapi/parser) on Node.js;
# reinstalled when the lock file changes. Without npm the tests say why they skip.
ASYNCAPI_STAMP := tests/asyncapi/node_modules/.installed
asyncapi-parser: $(ASYNCAPI_STAMP)

$(ASYNCAPI_STAMP): tests/asyncapi/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd tests/asyncapi && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the AsyncAPI parser tests will be skipped"; fi

demo: venv broker
	bash scripts/demo.sh

# Fast tier first (no broker), then the broker tier, then the fault tier (tests/faults:
# kills workers, and stops, pauses and kills RabbitMQ nodes of its own, a 3-node cluster
# included; never the shared broker), then the partition tier (a 3-node cluster in network
# namespaces of its own; skipped, with the reason, where namespaces cannot be made).
test: venv broker browser-deps asyncapi-parser
	$(VENV)/bin/python -m pytest -m "not broker and not faults"
	$(VENV)/bin/python -m pytest -m "broker and not faults"
	$(VENV)/bin/python -m pytest -m "faults and not partitions"
	bash scripts/ensure-netns-tools.sh
	$(VENV)/bin/python -m pytest -m partitions

# Unit tests only: no broker needed.
test-fast: venv asyncapi-parser
	$(VENV)/bin/python -m pytest -m "not broker and not faults"

lint: venv
	$(VENV)/bin/ruff check rabbitflow tests
	$(VENV)/bin/ruff format --check rabbitflow tests
	$(VENV)/bin/mypy rabbitflow

format: venv
	$(VENV)/bin/ruff format rabbitflow tests
	$(VENV)/bin/ruff check --fix rabbitflow tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis tests/asyncapi/node_modules
