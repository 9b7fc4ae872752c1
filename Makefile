# magpie — the whole set-up is `make run` or `make test`; both install into .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-sqlite check bench lock clean browser docs pg-server screenshots

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# The store lives in ~/.local/share/magpie (or MAGPIE_DATA_DIR), the same for every magpie command.
run: $(STAMP)
	$(BIN)/magpie serve

test: $(STAMP) browser pg-server
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The page tests write their screenshots to build/screenshots/; this refreshes the ones docs/ shows.
screenshots: $(STAMP) browser
	MAGPIE_SCREENSHOTS=docs/img MAGPIE_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q tests/browser tests/dashboard/test_browser.py tests/dashboard/test_browser_messages.py

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
docs: $(STAMP)
	$(BIN)/python -c 'import sys; from magpie.config import configuration_markdown as doc; sys.stdout.write(doc())' > docs/configuration.md

bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.run_all $(BENCH)

lock:
	$(BIN)/python -m pip freeze --all --exclude-editable | grep -v "^pip==" | sed '1i # Exact pins for reproducible installs: regenerate with `make lock`.' > requirements.lock

clean:
	rm -rf $(VENV) build
