"""The ``auditflow`` commands, one module per area; :mod:`auditflow_dagster.cli` is the click group
that wires them. Each command is thin: it parses, calls the functions of ``db/``, ``jobs/``,
``sensors/`` and :class:`api.dagster_client.DagsterClient`, and reports (rich progress bars on a
terminal, plain lines otherwise; :mod:`.common`).

| module | commands |
|---|---|
| :mod:`.serve` | ``stack``, ``demo`` |
| :mod:`.days` | ``run-day``, ``backfill`` |
| :mod:`.reruns` | ``rerun`` |
| :mod:`.keys` | ``api-key create | list | revoke`` |
| :mod:`.maintenance` | ``migrate``, ``import-config``, ``prune`` |
| :mod:`auditflow_dagster.inspect_cli` | ``inspect-fiche``, ``renormalize`` |
"""
