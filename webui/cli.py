"""``verge web`` and ``verge users``: the web UI's commands. The ``verge`` group
(``verge/cli/__init__.py``) adds them; they are built with ``verge.clikit``, like the rest."""
from __future__ import annotations

import sys

import click

from verge.clikit import UserError, friendly, migrated_settings, with_database


@click.command()
@click.option("--host", default=None, help="Address to listen on (default VERGE_WEB_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default VERGE_WEB_PORT, 8000).")
@click.option("--debug", is_flag=True, help="Reload on code changes and show tracebacks (never in production).")
@with_database
def web(host, port, debug, settings):
    """Serve the review web UI (Flask's development server; use gunicorn at scale:
    gunicorn -k gthread --threads 8 -w 4 -b 0.0.0.0:8000 'webui:create_app()')."""
    from webui import create_app

    app = create_app(settings)
    h, p = host or settings.web_host, port or settings.web_port
    if settings.log_format == "json":  # the request log (werkzeug's) included
        import logging

        import flask.cli

        # Flask prints its "Serving Flask app" banner with click, outside logging
        flask.cli.show_server_banner = lambda *args, **kwargs: None
        logging.getLogger("verge.web").info("verge web UI on http://%s:%s/", h, p)
    else:
        click.echo(f"verge web UI on http://{h}:{p}/ (Ctrl-C stops)")
    app.run(host=h, port=p, debug=debug, threaded=True, use_reloader=debug,
            request_handler=_quiet_handler())


def _quiet_handler():
    """Werkzeug's request handler without the ``Server: Werkzeug/x Python/y`` banner: no
    version numbers for a scanner to match against known bugs."""
    from werkzeug.serving import WSGIRequestHandler

    class Handler(WSGIRequestHandler):
        def send_response(self, code, message=None):
            self.log_request(code)
            self.send_response_only(code, message)
            self.send_header("Date", self.date_time_string())

    return Handler


@click.group()
def users():
    """People who review (reviewer) or also manage (admin)."""


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["reviewer", "admin"]), default="reviewer", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@friendly
def users_add(name, role, password_stdin):
    """Add a user; the password is prompted for (or read with --password-stdin)."""
    from store import users as store_users
    from store.db import session_scope
    from webui.security import hash_password

    if not name.strip() or len(name) > 100 or any(c.isspace() for c in name):
        raise UserError("a user name is 1 to 100 characters without spaces")
    settings = migrated_settings()
    try:
        hashed = hash_password(_password(password_stdin))
        with session_scope(settings.resolved_database_url) as s:
            store_users.create_user(s, name, hashed, role)
    except (ValueError, store_users.UserExists) as exc:
        raise UserError(str(exc)) from None
    click.echo(f"added {role} {name}")


@users.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@with_database
def users_passwd(name, password_stdin, settings):
    """Set NAME's password (signs them out everywhere)."""
    from store import users as store_users
    from store.db import session_scope
    from webui.security import hash_password

    try:
        hashed = hash_password(_password(password_stdin))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    with session_scope(settings.resolved_database_url) as s:
        user = store_users.user_by_name(s, name)
        if user is None:
            raise UserError(f"no user named {name!r}")
        store_users.set_password_hash(s, user.id, hashed)
    click.echo(f"password of {name} changed")


@users.command("token")
@click.argument("name")
@with_database
def users_token(name, settings):
    """Issue a new API token for NAME (replacing any old one) and print it, once."""
    from store import users as store_users
    from store.db import session_scope
    from webui.security import new_token

    token, digest = new_token()
    with session_scope(settings.resolved_database_url) as s:
        user = store_users.user_by_name(s, name)
        if user is None:
            raise UserError(f"no user named {name!r}; add one with `verge users add {name}`")
        store_users.set_token_hash(s, user.id, digest)
    click.echo(token)
    click.echo("(shown once: keep it somewhere safe; a new token replaces this one)", err=True)


@users.command("list")
@with_database
def users_list(settings):
    """List users, their roles and how many labels each gave."""
    from store import users as store_users
    from store.db import session_scope

    with session_scope(settings.resolved_database_url) as s:
        rows = store_users.list_users(s)
    if not rows:
        click.echo("no users yet; add one with `verge users add NAME --role admin`")
    for u, n in rows:
        click.echo(f"{u.name:<24} {u.role:<9} {n:>7} labels  token: {'yes' if u.token_hash else 'no'}")
