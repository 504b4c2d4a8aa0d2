# O2O pipeline: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint unit integration bench screenshots clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## virtualenv with the package and its dev tools

demo: install ## local Kafka + embedded ClickHouse, simulate, run every stage, print the report
	$(BIN)/o2o demo

lint: install ## ruff (lint + format check) and mypy
	$(BIN)/ruff check pipeline tests
	$(BIN)/ruff format --check pipeline tests
	$(BIN)/mypy

unit: install ## fast tests, no broker
	$(BIN)/python -m pytest tests/unit -q

integration: install ## tests against the real broker and chDB
	$(BIN)/python -m pytest tests/integration -q

# Test processes: each runs whole test files (their module fixtures run once); all share one broker.
# Tests wait more than they compute (group joins, session timeouts): 4 beat 2 even on 2 cores.
TEST_WORKERS ?= 4

test: lint ## every test but the long outages and second brokers (CI runs test-chaos too)
	$(BIN)/python -m pytest tests -q --durations=20 -n $(TEST_WORKERS) --dist loadfile -m "not outage and not own_broker"

# Outages that last minutes by nature (a stage down longer than the allowed lateness, the broker
# stopped and restarted) and tests that start a broker of their own: apart, so `make test` stays
# under 10 minutes.
test-chaos: install ## the long outage and restart tests, and the second brokers (CI runs them after make test)
	$(BIN)/python -m pytest tests -q --durations=10 -n 2 --dist loadfile -m "outage or own_broker"

bench: install ## throughput and memory against a bare confluent-kafka passthrough
	$(BIN)/o2o bench --events 100000

# The README's dashboard picture: the demo's pages, drawn by headless Chromium (Debian's chromium).
screenshots: install ## docs/dashboard.png from a small demo
	$(BIN)/o2o demo --customers 400 --days 14
	chromium --headless=new --no-sandbox --hide-scrollbars --window-size=1100,1250 \
		--screenshot=docs/dashboard.png file://$(CURDIR)/.state/dashboard.html

clean:
	-$(BIN)/o2o stack down
	rm -rf $(VENV) .state .pytest_cache .mypy_cache .ruff_cache
