# Every target installs what it needs into .venv first; `make dev`, `make demo` and `make test`
# work on a fresh clone with nothing but Python 3.11+.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)/.dagster
export ETL_DATA_DIR ?= $(CURDIR)/data

SAMPLE_ARGS := --start 2024-01-01 --days 14 --orders-per-day 5000 --customers 2000 --seed 7
SAMPLE := $(ETL_DATA_DIR)/sources/crm.db
DAILY_ASSETS := raw_customers,customers,orders,orders_rejects,customer_orders,daily_customer_metrics
EVENT_ASSETS := events,events_rejects,hourly_user_metrics
RANGE := 2024-01-01...2024-01-14
ORDERS ?= 1000000 10000000

# The BigQuery emulator lives in a venv of its own: it pins a DuckDB whose extensions are on PyPI
# (the machine reaches no other download site), and DuckDB finds them under the emulator's HOME.
EMULATOR := .venv-bqemulator
EMULATOR_STAMP := $(EMULATOR)/.installed-stamp
EMULATOR_DUCKDB := 1.5.5
EMULATOR_EXTENSIONS := $(EMULATOR)/home/.duckdb/extensions/v$(EMULATOR_DUCKDB)/linux_amd64

# A persistent local Ray (`make ray-up`): runs of `make dev` and `make demo` connect to it.
RAY_STATE := .ray
RAY_ENV = $(shell $(BIN)/python -c "from etl_assets.ray_cluster import client_env; \
	print(' '.join(f'{k}={v}' for k, v in client_env().items()))" 2>/dev/null)
# Dagster, connected to the persistent Ray when one is up and RAY_ADDRESS does not say otherwise.
DAGSTER = $(if $(RAY_ADDRESS),,$(RAY_ENV)) $(BIN)/dagster

.PHONY: setup emulators sample dev demo test bench bench-all ray-up ray-down lint format clean \
	new-event-batch crm-changes

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

emulators: $(EMULATOR_STAMP)

$(EMULATOR_STAMP):
	$(PYTHON) -m venv $(EMULATOR)
	$(EMULATOR)/bin/pip install --quiet --upgrade pip
	$(EMULATOR)/bin/pip install --quiet "bqemulator==1.4.0" "numpy>=2,<3" "duckdb==$(EMULATOR_DUCKDB)" \
		"duckdb-extension-spatial==$(EMULATOR_DUCKDB)" "duckdb-extension-avro==$(EMULATOR_DUCKDB)"
	mkdir -p $(EMULATOR_EXTENSIONS)
	cp $(EMULATOR)/lib/python3*/site-packages/duckdb_extension_*/extensions/v$(EMULATOR_DUCKDB)/*.duckdb_extension \
		$(EMULATOR_EXTENSIONS)/
	touch $@

sample: $(SAMPLE)

$(SAMPLE): | $(STAMP)
	$(BIN)/python -m etl_assets.sample_data --out $(ETL_DATA_DIR)/sources $(SAMPLE_ARGS)

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	ln -sf ../dagster.yaml $@

dev: setup sample $(DAGSTER_HOME)/dagster.yaml
	$(DAGSTER) dev -w workspace.yaml

demo: setup sample $(DAGSTER_HOME)/dagster.yaml
	$(DAGSTER) asset materialize -m etl_assets.definitions \
		--select "$(DAILY_ASSETS)" --partition-range "$(RANGE)"
	batches=$$($(BIN)/python -m etl_assets.register_event_batches) && \
		$(DAGSTER) asset materialize -m etl_assets.definitions \
		--select "$(EVENT_ASSETS)" --partition-range "$$batches"
	$(DAGSTER) asset materialize -m etl_assets.definitions --select transactions

# Watch the incremental loads: a new landing batch (the sensor picks it up in `make dev`),
# and a round of CRM changes (the next `transactions` run reads exactly those).
new-event-batch: setup sample
	$(BIN)/python -m etl_assets.sample_changes events --landing $(ETL_DATA_DIR)/sources/landing/events

crm-changes: setup sample
	$(BIN)/python -m etl_assets.sample_changes crm --crm-url "$${ETL_CRM_URL:-sqlite:///$(SAMPLE)}"

test: setup emulators
	$(BIN)/pytest

# Benchmarks (see benchmarks/README.md); each writes its JSON under benchmarks/results/.
bench: setup
	$(BIN)/python -m benchmarks.daily_chain --orders $(ORDERS)
	$(BIN)/python -m benchmarks.plot

bench-all: bench
	$(BIN)/python -m benchmarks.fixed_cost
	$(BIN)/python -m benchmarks.backfill
	$(BIN)/python -m benchmarks.memory
	$(BIN)/python -m benchmarks.checks_scale
	$(BIN)/python -m benchmarks.dimension_load
	$(BIN)/python -m benchmarks.first_merge
	$(BIN)/python -m benchmarks.event_hours
	$(BIN)/python -m benchmarks.event_dedup
	$(BIN)/python -m benchmarks.floors $(if $(ETL_BENCH_POSTGRES_URL),--postgres-url "$(ETL_BENCH_POSTGRES_URL)")
	$(BIN)/python -m benchmarks.plot

ray-up: setup
	$(BIN)/python -m etl_assets.ray_cluster up

ray-down: setup
	$(BIN)/python -m etl_assets.ray_cluster down

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(ETL_DATA_DIR)/warehouse .dagster benchmarks/work
