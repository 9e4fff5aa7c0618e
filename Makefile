# AuditFlow: two commands from a fresh clone.
#   make demo   – everything offline (embedded Postgres, synthetic CRM, Dagster, API), audits yesterday
#   make test   – the whole test suite (embedded Postgres unless AUDITFLOW_TEST_DATABASE_URL is set)
# Both (re)create .venv from uv.lock first; nothing else needs installing.

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv

.PHONY: demo test venv browser clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

venv: $(UV)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --python $(PYTHON) --quiet

demo: venv
	$(VENV)/bin/auditflow demo $(ARGS)

# The browser e2e test drives Debian's chromium (no browser download); installed when missing and
# apt is usable, otherwise that one test skips with its reason.
browser:
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && \
	   apt-get install -y -qq chromium >/dev/null 2>&1)) || echo "chromium not installed: the browser test will skip")

test: venv browser
	$(VENV)/bin/python -m pytest $(ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .auditflow .pytest_cache
