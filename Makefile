VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: install system-deps odbc chromium demo test lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# unixODBC and the FreeTDS ODBC driver, which the SQL Server store's tests use (pyodbc
# cannot even be imported without unixODBC). Installed only when missing.
ODBC_PACKAGES := unixodbc tdsodbc
odbc:
	@if [ "$$(dpkg-query -W -f='$${db:Status-Status}\n' $(ODBC_PACKAGES) 2>/dev/null \
	      | grep -c '^installed$$')" != "$(words $(ODBC_PACKAGES))" ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(ODBC_PACKAGES)"; \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(ODBC_PACKAGES); \
	  else \
	    echo "warning: install unixODBC and FreeTDS's ODBC driver by hand"; \
	  fi; \
	fi

# Headless Chromium for the Prefect UI test (tests/test_ui.py); Playwright drives
# this browser and never downloads one. Installed only when missing.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium"; \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "warning: install Chromium by hand (tests/test_ui.py needs it)"; \
	  fi; \
	fi

# Every system package the project and its tests need.
system-deps: odbc chromium

install: system-deps $(STAMP)

demo: $(STAMP)
	$(PY) -m statecheckpoint.demo

test: system-deps $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy statecheckpoint

bench: $(STAMP)
	$(PY) -m benchmarks filesystem --size-mb 1024

clean:
	rm -rf $(VENV) .prefect .demo-store test-artifacts
