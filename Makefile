# Two commands from a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
# Test services (see scripts/ensure-services.sh); override to point elsewhere.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/portal_sso
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
PYTEST_ARGS ?=

.PHONY: run serve test test-fast test-deps lint bench migrate clean help

help:
	@echo "make run    - set up (venv, deps, migrations) and serve on http://$(HOST):$(PORT)"
	@echo "make test   - set up and run the test suite against PostgreSQL and Redis"
	@echo "make lint   - ruff"
	@echo "make bench  - benchmarks under bench/"

$(VENV)/bin/activate:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ required"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/activate
	$(PIP) install --quiet -r requirements.txt
	@touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/activate
	$(PIP) install --quiet -r requirements-dev.txt
	@touch $@ $(VENV)/.runtime

migrate: $(VENV)/.runtime
	$(PY) manage.py migrate --noinput

run: migrate
	@echo
	@echo "  Broker:        http://$(HOST):$(PORT)/sso/   (IdP picker)"
	@echo "  Health:        http://$(HOST):$(PORT)/healthz  /readyz"
	@echo "  Admin console: http://$(HOST):$(PORT)/admin/"
	@echo "  No IdP yet? Create a local admin first:  $(PY) manage.py createsuperuser"
	@echo "  then add IdPs (manage.py idp --help), roles (role --help), mappings (mapping --help)."
	@echo "  Storage: $${DATABASE_URL:-SQLite var/broker.sqlite3}, $${REDIS_URL:-local-memory cache}"
	@echo
	DEBUG=$${DEBUG:-1} $(PY) manage.py runserver $(HOST):$(PORT) --noreload

# Production-like server (gunicorn sync workers), same settings.
serve: migrate
	$(VENV)/bin/gunicorn -c deploy/gunicorn.conf.py portal_sso.wsgi

# What the interop and browser tests need besides Python: Chromium, xmlsec1 and nginx
# (Debian packages, installed only when missing) and the npm peers: samlify (SAML IdP) in
# tests/interop and oidc-provider (OpenID Provider) in tests/oidc_interop.
NPM ?= npm
NPM_PEERS := tests/interop tests/oidc_interop

%/node_modules/.installed: %/package.json %/package-lock.json
	@command -v $(NPM) >/dev/null || { echo "make: npm (Node 20+) is required for $*" >&2; exit 3; }
	$(NPM) ci --prefix $* --no-audit --no-fund
	@touch $@

test-deps: $(addsuffix /node_modules/.installed,$(NPM_PEERS))
	bash scripts/install-system-deps.sh chromium xmlsec1 nginx

test: $(VENV)/.dev test-deps
	bash scripts/ensure-services.sh
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	  $(PY) -m pytest $(PYTEST_ARGS)

# Skip slow browser/interop tests locally.
test-fast: PYTEST_ARGS = -m "not slow"
test-fast: test

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .

# The benchmarks (bench/common.py and bench/login_breakdown.py are helpers they import).
BENCHES = saml_acs oidc_callback forward_auth login_throughput audit

bench: $(VENV)/.dev
	bash scripts/install-system-deps.sh xmlsec1 wrk
	bash scripts/ensure-services.sh
	@set -e; for b in $(BENCHES); do echo "== bench/$$b.py"; \
	  DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(PY) bench/$$b.py; done

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
