"""``verge settings`` and ``verge demo``."""
from __future__ import annotations

from pathlib import Path

import click

from verge.clikit import friendly, load_settings
from verge.settings import settings_markdown, settings_table


@click.command("settings")
@click.option("--markdown", is_flag=True, help="As the README's table.")
def settings_cmd(markdown):
    """Print every setting, its default and what it does."""
    if markdown:
        for line in settings_markdown():
            click.echo(line)
        return
    for env, default, doc in settings_table():
        click.echo(f"{env:<30} {default:<24} {doc}")


@click.command()
@click.option("--data", "data", type=click.Path(path_type=Path), default=None,
              help="Folder with fields/ and roads/ (default: the shared photos, else generated ones).")
@click.option("--no-serve", is_flag=True, help="Exit after the table instead of serving the web UI.")
@friendly
def demo(data, no_serve):
    """Set up, train the seed's head, score a batch with a worker, print what was routed, then
    serve the web UI with a demo login (Ctrl-C stops)."""
    from verge.demo import run_demo

    run_demo(load_settings(), data, serve_after=not no_serve)
