# AuditFlow: two commands from a fresh clone.
#   make demo   – everything offline (embedded Postgres, synthetic CRM, Dagster, API), audits yesterday
#   make test   – the whole test suite (embedded Postgres unless AUDITFLOW_TEST_DATABASE_URL is set)
# Both (re)create .venv from uv.lock first; nothing else needs installing.

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv

.PHONY: demo test venv clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

venv: $(UV)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --python $(PYTHON) --quiet

demo: venv
	$(VENV)/bin/auditflow demo $(ARGS)

test: venv
	$(VENV)/bin/python -m pytest $(ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .auditflow .pytest_cache
