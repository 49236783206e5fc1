# BulletInBoard: `make run` starts the whole board locally, `make test` runs every test.
# Both install what they need first (system packages when run as root, the virtual
# environment, the bot's npm packages, the C client).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := python3-venv libzmq3-dev libmsgpack-dev pkg-config gcc make docker-compose
SERVERS ?= 3
BOTS ?= 2
DATA ?= run

.PHONY: install system-packages run test lint bench clean

install: system-packages $(VENV)/.installed clients/js/node_modules/.package-lock.json \
	clients/c/cliente

# Debian packages: installed only when missing, and only as root (others get a hint).
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing system packages:$$missing (run 'make install' as root)"; exit 1; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# compat mode: a plain path entry, so twistd finds twisted/plugins from anywhere
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

clients/js/node_modules/.package-lock.json: clients/js/package.json clients/js/package-lock.json
	npm ci --prefix clients/js --no-audit --no-fund

clients/c/cliente: $(wildcard clients/c/*.c clients/c/*.h) clients/c/Makefile
	$(MAKE) -C clients/c

run: install
	$(VENV)/bin/bbd up --servers $(SERVERS) --bots $(BOTS) --data $(DATA)

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	$(PY) -m bbd.benchmarks
	$(PY) -m bbd.benchmarks --compare auth

clean:
	rm -rf $(VENV) clients/js/node_modules $(DATA)
	$(MAKE) -C clients/c clean
	find . -name dropin.cache -delete
