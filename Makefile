# Two commands set everything up on a fresh machine:
#   make run    installs what is missing, then starts master + worker on 127.0.0.1
#   make test   installs what is missing (test extras too), then runs every test
#   make webui  builds the dashboard (webui/, npm ci + vite) into titan/web/static/; run and
#               test do it when its sources changed
#   make screenshots  the dashboard's views in headless Chromium into docs/img/
#   make mutate runs the unit tests against one-line breaks of the core and the worker
#               (tools/mutations.toml); fails if one survives. MUTATE='--only ID' passes options
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
JOBS ?= 2

.PHONY: run test mutate install system-packages node-package browser-packages webui screenshots bench bench-store clean

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
# redis-server too; test_ssh_tunnel runs its own sshd on a loopback port, as the GPU box a
# worker joins from through `ssh -R`), installed with apt when missing.  Where systemd
# runs, installing openssh-server also starts the machine's own sshd (port 22).
system-packages:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null || { \
	  echo "installing redis-server (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
	  || { echo "could not install redis-server: install it, then run make test again"; exit 1; }; }
	@test -x /usr/sbin/sshd && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || { \
	  echo "installing openssh-server and openssh-client (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null) \
	  || { echo "could not install openssh-server: install it, then run make test again"; exit 1; }; }

# Node.js builds the dashboard (Debian's nodejs 18 or newer will do); the browser tests
# drive Debian's chromium through chromium-driver.
node-package:
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "installing nodejs and npm (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null) \
	  || { echo "could not install nodejs: install Node.js 18 or newer, then run make again"; exit 1; }; }

browser-packages:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || { echo "could not install chromium: install chromium and chromium-driver, then run make test again"; exit 1; }; }

# The dashboard: npm ci from the lockfile (the only time anything is fetched), then vite
# builds it into package data the master serves. Rebuilt when a source changes.
WEBUI_SOURCES := $(shell find webui/src -type f 2>/dev/null) webui/index.html \
	webui/vite.config.ts webui/tsconfig.json webui/package.json
webui/node_modules/.package-lock.json: webui/package-lock.json | node-package
	cd webui && npm ci --no-audit --no-fund --loglevel=error

titan/web/static/index.html: webui/node_modules/.package-lock.json $(WEBUI_SOURCES)
	cd webui && npm run --silent build -- --logLevel warn
	@touch $@

webui: titan/web/static/index.html

run: install webui
	$(BIN)/titan up

# The front end's own unit tests (vitest: the constructor's model), then every trial test.
test: install system-packages browser-packages webui
	cd webui && npm test --silent
	$(BIN)/trial -j$(JOBS) tests

screenshots: install browser-packages webui
	$(BIN)/python tools/screenshots.py docs/img

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
	rm -rf $(VENV) build *.egg-info _trial_temp twisted/plugins/dropin.cache webui/node_modules titan/web/static
