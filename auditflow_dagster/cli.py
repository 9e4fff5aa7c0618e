"""``auditflow``: the command line (click). This module is the group and its wiring; the commands
live in :mod:`auditflow_dagster.cli_commands` and :mod:`auditflow_dagster.inspect_cli`.

Expected failures (database or Dagster unreachable, an unknown id, a refused launch, a timeout) end
with one ``Error: …`` line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from auditflow_dagster import inspect_cli
from auditflow_dagster.cli_commands import days, keys, maintenance, reruns, serve
from auditflow_dagster.cli_commands.common import CliError, expected_failure


class AuditflowGroup(click.Group):
    """The root group: turns the exceptions the CLI expects into one-line errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            message = expected_failure(exc)
            if message is None:
                raise
            raise CliError(message) from None


@click.group("auditflow", cls=AuditflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
def auditflow() -> None:
    """AuditFlow: call-centre compliance audits on Dagster.

    Settings come from the environment (see the README's table); without AUDITFLOW_DATABASE_URL the
    embedded PostgreSQL under AUDITFLOW_HOME is used. Every command has --help.
    """


for command in (
    serve.stack_cmd,
    serve.demo,
    days.run_day,
    days.backfill,
    reruns.rerun,
    inspect_cli.inspect_fiche_cmd,
    inspect_cli.renormalize_cmd,
    keys.api_key,
    maintenance.migrate,
    maintenance.import_config,
    maintenance.prune,
):
    auditflow.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """The ``auditflow`` console script: run the group on ``argv`` (default: the process's
    arguments) and return the exit code (help: 0, usage error: 2, expected failure: 1 or its own)."""
    try:
        result = auditflow.main(args=argv, prog_name="auditflow", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
