# The two commands that matter: `make run` (the worker stack on this machine) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APP := personal_assistant.workers.celery_app

.PHONY: run stack test lint compose-check bench deps run-deps system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## deps: the virtual environment with the package and its dev tools
deps: $(STAMP)

## system-deps: redis-server, promtool (Debian's prometheus package), openssl and the PostgreSQL
## server binaries (Debian's postgresql package; not on PATH there) for the tests; docker-compose
## and amtool with the alertmanager binary (Debian's prometheus-alertmanager) for compose-check
## and the Alertmanager tests; each installed only if missing
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v amtool >/dev/null || missing="$$missing prometheus-alertmanager"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

## run-deps: what `make run` itself needs: redis-server (for its private Redis), if missing; not
## the test and deployment tools system-deps installs
run-deps:
	@command -v redis-server >/dev/null || { echo "installing redis-server (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends redis-server >/dev/null; }

## run: one worker on all five queues with embedded beat, against CELERY_BROKER_URL
## (starts a private Redis under var/ when no broker answers there)
run: deps run-deps
	$(BIN)/python -m personal_assistant.workers.cli.run_local

## stack: the compose topology as local processes (a worker per queue, beat, Redis, Prometheus);
## ARGS="--scale email_worker=3 --prometheus-interval 1s" (tools/local_stack.py --help)
stack: deps system-deps
	$(BIN)/python tools/local_stack.py $(ARGS)

## test: unit and integration tests (they start their own Redis and PostgreSQL on free ports),
## two test processes side by side: most integration tests wait on worker processes, so two
## halve the wall time on two cores (one module stays in one process: --dist loadfile)
test: deps system-deps
	$(BIN)/pytest -n 2 --dist loadfile

## lint: ruff, mypy and the layer contracts of DESIGN.md section 2 (import-linter's contracts in
## pyproject.toml, and no import cycle), all must be clean
lint: deps
	$(BIN)/ruff check src tests tools
	$(BIN)/ruff format --check src tests tools
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo
	$(BIN)/python tools/check_import_cycles.py

## compose-check: the production deployment checked with the real tools (no container engine
## needed): docker-compose's own validation with the example env file, the deployment's rules
## (tools/compose_check.py: a worker per queue, healthchecks, restart policies, no container_name,
## no secret with a default, a non-root pinned image), Prometheus's config and rules, the
## Alertmanager config, and every PromQL expression of the rules and dashboards
compose-check: deps system-deps
	docker-compose -f docker/docker-compose.prod.yml --env-file docker/.env.example config -q
	$(BIN)/python tools/compose_check.py
	promtool check config docker/monitoring/prometheus.yml
	promtool check rules docker/monitoring/alert_rules.yml
	amtool check-config docker/monitoring/alertmanager.yml
	$(BIN)/python tools/promql_check.py

## bench: every benchmark of tests/performance against its anchor, measured in the same run, with
## a line per benchmark as it starts and ends; writes bench-report.md (figures, ratios, targets,
## charts in docs/bench/) and keeps pytest's log in var/bench/bench.log; fails when a benchmark
## failed or a target was missed; ARGS="-k beat" (or a file) runs some only
bench: deps system-deps
	$(BIN)/python tools/bench.py $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
