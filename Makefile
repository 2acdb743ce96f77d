# One entry point for people and CI. `make run` starts everything locally;
# `make test` runs the whole suite against real PostgreSQL and Kafka.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: python-deps run stop status test bench infra-up infra-down build build-release build-debug lint fmt rotate-admin-key

infra-up:
	@bash infra/up.sh

infra-down:
	@bash infra/down.sh

build:
	$(CARGO) build --workspace --bins

# `make run` serves release builds: the speed a user measures is the real
# one (LICENSING_PROFILE=debug serves the debug builds of `make build`).
LICENSING_PROFILE ?= release
export LICENSING_PROFILE

build-release:
	$(CARGO) build --release --workspace --bins

build-debug: build

run: infra-up build-$(LICENSING_PROFILE)
	@bash infra/services.sh start

stop:
	@bash infra/services.sh stop
	@bash infra/down.sh

# Each service's pid, port, readiness, relay role and restarts by its
# supervisor.
status:
	@bash infra/services.sh status

# A new bootstrap admin key for `make run`'s services, in force within a
# second (see README, "Security and trust").
rotate-admin-key:
	@bash infra/rotate-admin-key.sh

# Unit tests need nothing; integration and end-to-end tests use the
# PostgreSQL server and Kafka broker started by infra-up (reused if running).
# The JOSE interoperability test verifies activation files with Python's
# jwcrypto, and the API fuzzing test runs Schemathesis against every
# service's OpenAPI document; both from PyPI.
python-deps:
	@python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

# The fault tests (tests/tests/faults) kill the broker and stop the
# database, so they run alone, first; the rest runs even when they fail.
test: infra-up build python-deps
	@bash infra/postgres/drop-test-dbs.sh
	@status=0; \
	  $(CARGO) test -p e2e --test faults || status=$$?; \
	  $(CARGO) test --workspace --no-fail-fast || status=$$?; \
	  exit $$status

bench: infra-up
	@bash bench/run.sh
	@bash bench/activation.sh
	@bash bench/pipeline.sh
	@bash bench/aggregates.sh
	@bash bench/domain.sh
	@bash bench/grants.sh
	@bash bench/projector.sh
	@bash bench/trust.sh
	@bash bench/callers.sh
	@bash bench/summary.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
