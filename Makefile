# rpm-telemetry. `make demo` runs the main job on a fresh machine; `make test` runs the test suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python

.PHONY: help install services services-down status migrate migrate-status seed db-test db-compare dev test lint typecheck pytest fuzz demo bench delivery bench-delivery bench-processors chaos

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

install:  ## install Debian packages, the Python .venv and the Kafka jars (idempotent)
	bash scripts/install.sh

services:  ## start PostgreSQL, Mosquitto and Kafka on loopback (idempotent)
	bash scripts/services.sh up

services-down:  ## stop the services this project started
	bash scripts/services.sh down

status:  ## show which services run
	bash scripts/services.sh status

migrate: install  ## apply pending SQL migrations
	$(PY) -m migrations up

migrate-status: install  ## list applied and pending migrations
	$(PY) -m migrations status

seed: migrate  ## load realistic demo data (idempotent) and provision the seeded fleet
	$(PY) -m scripts.seed

db-test: install  ## check the live database: roles, settings, objects, partitions, seed, audit log, privileges
	$(PY) -m scripts.db_test

db-compare: install  ## diff the live database's schema against a scratch database migrated from migrations/
	$(PY) -m scripts.db_compare

dev: services seed  ## services, migrations, seed, then the pipeline (ingest, inline processors, clock, delivery) in the foreground; Ctrl-C stops
	$(PY) -m scripts.dev

lint: install  ## ruff
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: install  ## mypy --strict on everything, tests included
	.venv/bin/mypy

pytest: install  ## the test suite only (services must be up)
	$(PY) -m pytest

test: services migrate lint typecheck pytest  ## start services, migrate, lint, typecheck and run the tests

fuzz: services migrate  ## the property tests with fresh random examples (make test replays fixed ones); repeat at will
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -p no:cacheprovider $$(grep -rl '@given' tests)

demo: services seed  ## fresh machine to a running pipeline: services, migrations, seed, the simulated fleet (<= 3 min), a summary
	$(PY) -m scripts.demo

bench: services migrate  ## benchmarks in a throw-away sandbox (fresh database, private broker): docs/benchmarks.md + plots
	$(PY) -m scripts.bench.run

delivery: migrate  ## the delivery service (notifications to care teams, escalation; metrics on :9110) in the foreground
	$(PY) -m processors.delivery

bench-delivery: services migrate  ## dispatcher throughput in a throw-away database (in-app + signed webhooks)
	$(PY) -m scripts.bench.delivery

bench-processors: services migrate  ## processors: engine, inline, Faust vs bare aiokafka, notification latency (sandbox)
	$(PY) -m scripts.bench.processors

chaos: install  ## fault scenarios under load on a private loopback stack (own PostgreSQL/Mosquitto/Kafka): table
	$(PY) -m scripts.chaos $(CHAOS_ARGS)
