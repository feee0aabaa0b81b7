"""``verge web`` and ``verge users``: registered on the ``verge`` group by ``register(main)``.

verge/cli.py imports this module at its end, so ``verge.cli``'s helpers are imported inside the
commands (importing them here would be circular)."""
from __future__ import annotations

import sys

import click


def _cli():
    from verge import cli
    return cli


def register(group: click.Group) -> None:
    group.add_command(web)
    group.add_command(users)


@click.command()
@click.option("--host", default=None, help="Address to listen on (default VERGE_WEB_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default VERGE_WEB_PORT, 8000).")
@click.option("--debug", is_flag=True, help="Reload on code changes and show tracebacks (never in production).")
def web(host, port, debug):
    """Serve the review web UI (Flask's development server; use gunicorn at scale:
    gunicorn -k gthread --threads 8 -w 4 -b 0.0.0.0:8000 'webui:create_app()')."""
    cli = _cli()

    @cli._friendly
    def run():
        from webui import create_app

        settings = cli._settings()
        cli._migrated(settings)
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

    run()


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
def users_add(name, role, password_stdin):
    """Add a user; the password is prompted for (or read with --password-stdin)."""
    cli = _cli()

    @cli._friendly
    def run():
        from store import users as store_users
        from store.db import session_scope
        from webui.security import hash_password

        if not name.strip() or len(name) > 100 or any(c.isspace() for c in name):
            raise cli.UserError("a user name is 1 to 100 characters without spaces")
        settings = cli._settings()
        cli._migrated(settings)
        try:
            hashed = hash_password(_password(password_stdin))
            with session_scope(settings.resolved_database_url) as s:
                store_users.create_user(s, name, hashed, role)
        except (ValueError, store_users.UserExists) as exc:
            raise cli.UserError(str(exc)) from None
        click.echo(f"added {role} {name}")

    run()


@users.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def users_passwd(name, password_stdin):
    """Set NAME's password (signs them out everywhere)."""
    cli = _cli()

    @cli._friendly
    def run():
        from store import users as store_users
        from store.db import session_scope
        from webui.security import hash_password

        settings = cli._settings()
        cli._migrated(settings)
        try:
            hashed = hash_password(_password(password_stdin))
        except ValueError as exc:
            raise cli.UserError(str(exc)) from None
        with session_scope(settings.resolved_database_url) as s:
            user = store_users.user_by_name(s, name)
            if user is None:
                raise cli.UserError(f"no user named {name!r}")
            store_users.set_password_hash(s, user.id, hashed)
        click.echo(f"password of {name} changed")

    run()


@users.command("token")
@click.argument("name")
def users_token(name):
    """Issue a new API token for NAME (replacing any old one) and print it, once."""
    cli = _cli()

    @cli._friendly
    def run():
        from store import users as store_users
        from store.db import session_scope
        from webui.security import new_token

        settings = cli._settings()
        cli._migrated(settings)
        token, digest = new_token()
        with session_scope(settings.resolved_database_url) as s:
            user = store_users.user_by_name(s, name)
            if user is None:
                raise cli.UserError(f"no user named {name!r}; add one with `verge users add {name}`")
            store_users.set_token_hash(s, user.id, digest)
        click.echo(token)
        click.echo("(shown once: keep it somewhere safe; a new token replaces this one)", err=True)

    run()


@users.command("list")
def users_list():
    """List users, their roles and how many labels each gave."""
    cli = _cli()

    @cli._friendly
    def run():
        from store import users as store_users
        from store.db import session_scope

        settings = cli._settings()
        cli._migrated(settings)
        with session_scope(settings.resolved_database_url) as s:
            rows = store_users.list_users(s)
        if not rows:
            click.echo("no users yet; add one with `verge users add NAME --role admin`")
        for u, n in rows:
            click.echo(f"{u.name:<24} {u.role:<9} {n:>7} labels  token: {'yes' if u.token_hash else 'no'}")

    run()
