# tapstream — one entry point for people. Every target installs what it needs and is safe to run twice.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STATE ?= .tapstream
NATIVE := services/tapper/native
NATIVE_STAMP := $(VENV)/.native
# shared by every checkout on this machine: a clean clone reuses the compiled librdkafka
CARGO_TARGET ?= $(HOME)/.cache/tapstream/cargo-target

.PHONY: setup system-deps up down status clean test test-unit test-integration demo bench \
        bench-tapper bench-recovery bench-mirror bench-scale lint typecheck kafka-tools validate-deploy

setup: $(STAMP) $(NATIVE_STAMP)

# Reinstall only when the dependency list changes: quick the second time.
$(STAMP): pyproject.toml | system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

system-deps:
	@bash deploy/local/install-system-deps.sh

# The tapper's compiled data path (Rust, PyO3 + rdkafka; librdkafka built from source the first
# time, ~3.5 min on 2 cores): rebuilt when its sources change.
$(NATIVE_STAMP): $(STAMP) $(NATIVE)/Cargo.toml $(NATIVE)/Cargo.lock $(wildcard $(NATIVE)/src/*.rs)
	@command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) to build $(NATIVE)" >&2; exit 1; }
	CARGO_TARGET_DIR=$(CARGO_TARGET) VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin develop --release --quiet -m $(NATIVE)/Cargo.toml
	@touch $@

# SECURE=1: the secured two-site stack (SASL_SSL + SCRAM-SHA-512, one Kafka principal per service
# with the ACL table's grants), in <state>/secured on ports of its own.
# REGISTRY=1: also a schema registry (Apicurio Registry, Confluent-compatible API, built from Maven
# Central on first use) and kcat with Avro; `make up` prints the URL and the kcat command line.
up: setup system-deps
	$(PY) -m tapstream.localstack up $(if $(SECURE),--secure) $(if $(REGISTRY),--registry)

down: setup
	$(PY) -m tapstream.localstack down $(if $(SECURE),--secure)

status: setup
	$(PY) -m tapstream.localstack status

clean: down
	rm -rf $(STATE)

# The path of kcat built with Avro support: $$(make -s kcat-avro) -C -s value=avro -r <registry> ...
.PHONY: kcat-avro
kcat-avro: setup system-deps
	@$(PY) -m tapstream.localstack kcat

# Kafka's own CLI tools against a site, e.g. make kafka-tools ARGS="kafka-topics.sh --list" SITE=recovery
kafka-tools: setup
	@$(PY) -m tapstream.localstack tool --site $(or $(SITE),protected) -- $(ARGS)

# Lint and types first (seconds), then every test against the real stack.
test: setup system-deps lint typecheck
	TAPSTREAM_FAULTS_FILE=$(STATE)/faults.json $(PY) -m pytest --durations=15 tests

test-unit: setup
	$(PY) -m pytest tests/unit

test-integration: setup system-deps
	TAPSTREAM_FAULTS_FILE=$(STATE)/faults.json $(PY) -m pytest tests/integration

lint: setup
	$(VENV)/bin/ruff check lib services cli tests
	$(VENV)/bin/ruff format --check lib services cli tests

typecheck: setup
	$(VENV)/bin/mypy lib services cli

# The main job: both sites, a protected ext4 written through the tapper, checkpoints, restores, compare.
demo: setup system-deps
	$(PY) -m tapstream.localstack.demo

# Every benchmark: tapper vs nbdkit, recovery (RPO, restore, journal), MirrorMaker 2 crossing.
bench: bench-tapper bench-recovery bench-mirror

# fio (nbd engine, iodepth 16) against nbdkit file, nbdkit python, tapstream sync and async (Python
# and compiled paths); then each tapstream topic replayed must equal its volume.
bench-tapper: up
	$(PY) bench/tapper.py $(BENCH_ARGS)

# RPO under load across MirrorMaker 2, restore vs qemu-img convert, journal rows/s.
bench-recovery: up
	$(PY) bench/recovery.py

# Protected -> recovery crossing latency of single records.
bench-mirror: up
	$(PY) bench/mirror_latency.py

# N volumes (1, 8, 32, 64) on 1 and 4 tappers, a rate-limited fio writer each, the journal and VDSA at
# the recovery site: write rate, RPO, lags, memory, CPU per MB -> bench/results/scale.json.
bench-scale: up
	$(PY) bench/scale.py $(BENCH_ARGS)

# Deployment files checked offline: compose, every Kustomize overlay rendered and validated against
# Kubernetes' and Strimzi's schemas, TAPSTREAM_* names against the services' settings, volume mounts
# against the settings' paths, the KafkaUsers and each service's Kafka credentials against the ACL
# table (lib/tapstream/core/acl.py), and that table against the topics and groups the code uses
# (also in `make test`).
validate-deploy: setup
	$(PY) -m pytest tests/unit/deploy tests/unit/core/test_acl.py -q

# Only the tests on the secured two-site stack (SASL_SSL + SCRAM-SHA-512, StandardAuthorizer, the
# ACL table's users and grants, NBD TLS, API tokens over HTTPS); `make test` runs them too.
.PHONY: secured
secured: setup system-deps
	$(PY) -m pytest -m secured tests/integration/secured

# Encryption analyzer on benign and malicious ext4 workloads through the tapper -> bench/results/analyzer.json.
.PHONY: eval-analyzer
eval-analyzer: up
	$(PY) bench/eval_analyzer.py

# Every fault scenario: the fast ones on the default stack (they also run in `make test`), then those
# that need the chaos stack (.tapstream-chaos: 3 protected brokers, toxiproxy between MirrorMaker 2
# and them), which the session starts and stops. Rows go to bench/results/faults.json; the table is
# printed even when a scenario fails.
FAULT_TESTS := $(addprefix tests/integration/,test_faults.py test_halt.py test_lost_upstream.py \
	test_poison.py test_local_faults.py test_disk_full.py test_tapper_fence.py)
.PHONY: chaos
chaos: setup system-deps
	@rc=0; $(PY) -m pytest $(FAULT_TESTS) $(CHAOS_ARGS) || rc=$$?; \
	$(PY) -m pytest -m chaos tests/integration/chaos $(CHAOS_ARGS) || rc=$$?; \
	$(PY) -m tapstream.localstack.faults bench/results/faults.json; exit $$rc

# The web console's pages as PNGs under bench/results/console/ (the README shows them): its browser
# test on the local stack (Debian's chromium), keeping the screenshots it takes.
.PHONY: screenshots
screenshots: up
	TAPSTREAM_CONSOLE_SCREENSHOTS=bench/results/console TAPSTREAM_FAULTS_FILE=$(STATE)/faults.json \
		$(PY) -m pytest -q tests/integration/console
