# BulletInBoard: `make run` starts the whole board locally, `make test` runs every test.
# Both install what they need first (system packages when run as root, the virtual
# environment, the bot's npm packages, the C client).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages (see scripts/system-packages.sh): what `make run` needs, and what only
# the tests add (docker-compose validates docker-compose.yml; iproute2 and iptables build
# the partition tests' network namespaces; chromium and chromium-driver run the dashboard's
# browser tests).
RUN_PACKAGES := python3-venv libzmq3-dev msgpack-c pkg-config gcc make nodejs npm
TEST_PACKAGES := docker-compose iproute2 iptables chromium chromium-driver
SERVERS ?= 3
BOTS ?= 2
DATA ?= run
BASE_PORT ?=
MINUTES ?= 1
SEED ?=

.PHONY: install system-packages test-packages run status test lint bench chaos clean

install: system-packages $(VENV)/.installed clients/js/node_modules/.package-lock.json \
	clients/c/cliente

# Debian packages: installed only when missing, and only as root (others get a hint).
system-packages:
	@bash scripts/system-packages.sh $(RUN_PACKAGES)

test-packages:
	@bash scripts/system-packages.sh $(TEST_PACKAGES)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Editable; pyproject's package-dir makes it a plain path entry (twisted/plugins found).
	$(PY) -m pip install -q -e '.[test]'
	touch $@

clients/js/node_modules/.package-lock.json: clients/js/package.json clients/js/package-lock.json
	npm ci --prefix clients/js --no-audit --no-fund

clients/c/cliente: $(wildcard clients/c/*.c clients/c/*.h) clients/c/Makefile
	$(MAKE) -C clients/c

run: install
	$(VENV)/bin/bbd up --servers $(SERVERS) --bots $(BOTS) --data $(DATA) \
		$(if $(BASE_PORT),--base-port $(BASE_PORT))

# The board `make run` started (same BASE_PORT, if one was given).
status: install
	$(VENV)/bin/bbd status $(if $(BASE_PORT),--base-port $(BASE_PORT))

lint: install
	$(VENV)/bin/ruff check .

test: install test-packages lint
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	$(PY) -m bbd.scalebench
	$(PY) -m bbd.benchmarks
	$(PY) -m bbd.benchmarks auth

# The nemesis and checker (as root): make chaos MINUTES=30 SEED=15
chaos: install
	$(VENV)/bin/bbd chaos --minutes $(MINUTES) $(if $(SEED),--seed $(SEED)) --out chaos-report

clean:
	rm -rf $(VENV) clients/js/node_modules $(DATA)
	$(MAKE) -C clients/c clean
	find . -name dropin.cache -delete
