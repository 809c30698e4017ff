# Two commands set everything up on a fresh machine:
#   make run    installs what is missing, then starts master + worker on 127.0.0.1
#   make test   installs what is missing (test extras too), then runs every test
#   make mutate runs the unit tests against one-line breaks of the core and the worker
#               (tools/mutations.toml); fails if one survives. MUTATE='--only ID' passes options
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
JOBS ?= 2

.PHONY: run test mutate install system-packages bench bench-store clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3

# Editable in "compat" mode puts the checkout on sys.path, which is how Twisted's plugin
# system finds twisted/plugins/titan_services.py here.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; from twisted import plugins; import titan.plugins; list(getPlugins(IPlugin, plugins)); list(getPlugins(IPlugin, titan.plugins))"
	touch $@

install: $(VENV)/.installed

# System packages the tests use (the store's conformance suite runs against a real
# redis-server too), installed with apt when missing.
system-packages:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null || { \
	  echo "installing redis-server (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
	  || { echo "could not install redis-server: install it, then run make test again"; exit 1; }; }

run: install
	$(BIN)/titan up

test: install system-packages
	$(BIN)/trial -j$(JOBS) tests

# Each mutation runs on a copy of titan/ and tests/ in a temporary directory: the checkout
# is never edited.  docs/testing.md says how to add one.
mutate: install
	$(BIN)/python tools/mutate.py -j $(JOBS) $(MUTATE)

$(VENV)/.bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]' --config-settings editable_mode=compat
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python bench/fanout.py

bench-store: $(VENV)/.bench system-packages
	$(BIN)/python bench/store.py

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp twisted/plugins/dropin.cache
