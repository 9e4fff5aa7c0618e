"""``auditflow api-key create | list | revoke`` (issue 8): API keys are shown once and stored as a
SHA-256 (:mod:`auditflow_dagster.db.api_keys`)."""

from __future__ import annotations

import datetime as dt
import json

import click

from auditflow_dagster.cli_commands.common import CliError


def _key_db() -> None:
    """The application database, migrated (keys may be the first thing a fresh install creates)."""
    from auditflow_dagster.db.embedded import ensure_database_env
    from auditflow_dagster.db.migrate import upgrade

    ensure_database_env()
    upgrade()


def _split(chunks: tuple[str, ...]) -> list[str]:
    """Repeatable and comma-separated values, blanks dropped."""
    return [v.strip() for chunk in chunks for v in chunk.split(",") if v.strip()]


class _PermissionsEpilog(click.Command):
    """``create --help`` ends with the permission list, read from the code when help is shown."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from auditflow_dagster.db.api_keys import PERMISSIONS

        formatter.write_paragraph()
        formatter.write_text("Permissions: " + ", ".join(PERMISSIONS))


@click.group("api-key")
def api_key() -> None:
    """Create, list and revoke API keys."""


@api_key.command("create", cls=_PermissionsEpilog)
@click.option("--name", required=True, help="what the key is for (shown in lists)")
@click.option("--permission", "-p", "permissions", multiple=True, required=True,
              help="repeatable or comma-separated, e.g. -p audits.read,audits.run (* = everything)")
@click.option("--scope", type=click.Choice(["SELF", "GROUP", "ALL"]), default="SELF", show_default=True)
@click.option("--groupe", "-g", "groupes", multiple=True, help="GROUP scope: repeatable or comma-separated")
@click.option("--crm-user-id", help="SELF scope: the CRM attribution user id")
@click.option("--expires-in-days", type=float, help="the key stops working after this many days")
@click.option("--token-only", is_flag=True, help="print only the token")
def create(name: str, permissions: tuple[str, ...], scope: str, groupes: tuple[str, ...], crm_user_id: str | None,
           expires_in_days: float | None, token_only: bool) -> None:
    """Create a key; its token is printed once (stdout) and stored nowhere."""
    from auditflow_dagster.db import api_keys
    from auditflow_dagster.db.session import session_scope

    expires_at = None
    if expires_in_days is not None:
        expires_at = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=expires_in_days)
    _key_db()
    try:
        with session_scope() as s:
            view, token = api_keys.create_key(s, name=name, permissions=_split(permissions), scope=scope,
                                              groupes=_split(groupes), crm_user_id=crm_user_id, created_by="cli",
                                              expires_at=expires_at)
    except api_keys.InvalidKeyDefinition as exc:
        raise CliError(str(exc), exit_code=2) from None
    if token_only:
        click.echo(token)
        return
    shown_scope = view["scope"] + (f" {','.join(view['groupes'])}" if view["groupes"] else "") + (
        f" crm_user_id={view['crmUserId']}" if view["crmUserId"] else "")
    click.echo(f"created API key {view['id']} ({view['keyPrefix']}) '{view['name']}'")
    click.echo(f"  permissions: {', '.join(view['permissions'])}")
    click.echo(f"  scope:       {shown_scope}")
    if view["expiresAt"]:
        click.echo(f"  expires at:  {view['expiresAt']}")
    click.echo("  token (shown once, store it now):")
    click.echo(token)


@api_key.command("list")
@click.option("--active", is_flag=True, help="hide revoked keys")
@click.option("--json", "as_json", is_flag=True, help="the keys as JSON")
def list_keys(active: bool, as_json: bool) -> None:
    """List keys (never a hash or a token)."""
    from auditflow_dagster.db import api_keys
    from auditflow_dagster.db.session import session_scope

    _key_db()
    with session_scope() as s:
        keys = api_keys.list_keys(s, include_revoked=not active)
    if as_json:
        click.echo(json.dumps(keys, indent=2))
        return
    for k in keys:
        click.echo(f"{k['id']:>5}  {k['keyPrefix']}  {k['status']:<8} {k['scope']:<5} {','.join(k['permissions'])}  "
                   f"'{k['name']}'  last used {k['lastUsedAt'] or 'never'}")
    if not keys:
        click.echo("no API keys")


@api_key.command("revoke")
@click.argument("key_id", metavar="ID", type=int)
def revoke(key_id: int) -> None:
    """Revoke key ID (idempotent: a revoked key keeps its first revocation time)."""
    from auditflow_dagster.db import api_keys
    from auditflow_dagster.db.session import session_scope

    _key_db()
    with session_scope() as s:
        view = api_keys.revoke_key(s, key_id)
    if view is None:
        raise CliError(f"no API key {key_id}")
    click.echo(f"revoked API key {view['id']} ({view['keyPrefix']}) at {view['revokedAt']}")
