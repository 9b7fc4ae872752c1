# magpie — the whole set-up is `make run` or `make test`; both install into .venv when needed.
# `make run` installs the runtime packages only (requirements.lock); `make test` and `make check` add the
# test and development tools (requirements-dev.lock).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed

.PHONY: run test test-sqlite check bench lock clean browser docs pg-server screenshots

$(RUNTIME): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.lock
	$(PIP) --no-deps --no-build-isolation -e .
	@touch $(RUNTIME)

$(STAMP): $(RUNTIME) requirements-dev.lock
	$(PIP) -r requirements.lock -r requirements-dev.lock
	@touch $(STAMP)

# The store lives in ~/.local/share/magpie (or MAGPIE_DATA_DIR), the same for every magpie command.
run: $(RUNTIME)
	$(BIN)/magpie serve

# The suite runs in TEST_WORKERS processes (pytest-xdist), one test file per process at a time so that a
# file's server and browser fixtures are set up once; more processes than cores pay, as most tests wait on
# servers, subprocesses and the browser. Files go out in collection order (not largest first), so that a
# file of a few long tests (the fuzzing) starts early rather than last. `TEST_WORKERS=0`: one process.
# The tests marked `alone` measure time or throughput: they run afterwards, one at a time (exit status 5:
# none selected by PYTEST_ARGS).
TEST_WORKERS ?= 3
test: $(STAMP) browser pg-server
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not alone" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m alone $(PYTEST_ARGS) || [ $$? = 5 ]

# The page tests write their screenshots to build/screenshots/; this refreshes the ones docs/ shows.
screenshots: $(STAMP) browser
	MAGPIE_SCREENSHOTS=docs/img MAGPIE_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q tests/browser tests/dashboard/test_browser.py tests/dashboard/test_browser_messages.py tests/dashboard/test_browser_broadcasts.py

# Debian's PostgreSQL server binaries (initdb, pg_ctl): the outage test runs a private server it can stop,
# and the test session starts a throwaway one when no password-less server answers on 127.0.0.1:5432.
pg-server:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "initdb/pg_ctl are missing: run 'sudo apt-get install postgresql' for the PostgreSQL tests"; fi; }

# Debian's Chromium (with CJK fonts for Korean text) for the page tests; Playwright drives this binary.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; \
	  else echo "Chromium is missing: run 'sudo apt-get install chromium fonts-noto-cjk' for the page tests"; fi; }

check: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

# docs/configuration.md is generated from the settings table in src/magpie/config.py.
docs: $(RUNTIME)
	$(BIN)/python -c 'import sys; from magpie.config import configuration_markdown as doc; sys.stdout.write(doc())' > docs/configuration.md

bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.run_all $(BENCH)

# Both lock files from fresh resolutions: the runtime set from `pip install .`, then the development
# tools from `pip install .[dev]` held to the runtime pins (so that the two files never disagree).
LOCK := build/lock
FREEZE = bin/python -m pip freeze --all --exclude magpie | grep -v "^pip=="
lock:
	rm -rf $(LOCK) && $(PYTHON) -m venv $(LOCK)/runtime && $(PYTHON) -m venv $(LOCK)/dev
	$(LOCK)/runtime/bin/python -m pip install --quiet --upgrade setuptools wheel
	$(LOCK)/runtime/bin/python -m pip install --quiet --no-build-isolation .
	{ sed -n '1,2p' requirements.lock; $(LOCK)/runtime/$(FREEZE); } > $(LOCK)/requirements.lock
	mv $(LOCK)/requirements.lock requirements.lock
	$(LOCK)/dev/bin/python -m pip install --quiet --upgrade -c requirements.lock setuptools wheel
	$(LOCK)/dev/bin/python -m pip install --quiet --no-build-isolation -c requirements.lock ".[dev]"
	{ sed -n '1,2p' requirements-dev.lock; $(LOCK)/dev/$(FREEZE) | grep -vxF -f requirements.lock; } > $(LOCK)/dev.lock
	mv $(LOCK)/dev.lock requirements-dev.lock
	rm -rf $(LOCK)

clean:
	rm -rf $(VENV) build
