"""``verge gold``: images with known classes, handed to reviewers unannounced (store/gold.py)."""
from __future__ import annotations

from pathlib import Path

import click

from verge.clikit import UserError, friendly, migrated_settings


def folder_classes() -> dict[str, str]:
    """Class folder name -> class: the classes' own names, and a training folder's (fields/,
    roads/). (A function: ``store.schema`` loads SQLAlchemy, which ``verge --help`` need not.)"""
    from models.classes import CLASSES

    return {**{c: c for c in CLASSES}, "fields": "field", "roads": "road"}


@click.group()
def gold():
    """Gold images: known classes that measure reviewers."""


@gold.command("add")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--batch", "batch_name", default="gold", show_default=True,
              help="Batch the images are submitted in (they are scored like any image).")
@friendly
def add(folder, batch_name):
    """Submit FOLDER/<class>/ images (field, road, road_and_field; or fields, roads) and
    mark each gold with its folder's class."""
    from store import gold as store_gold
    from store.blobs import sha256_hex
    from store.db import session_scope
    from workers.submission import iter_files, submit_paths

    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    classes = folder_classes()
    groups = {classes[d.name]: d for d in sorted(folder.iterdir()) if d.is_dir() and d.name in classes}
    if not groups:
        raise UserError(f"{folder} has no class folders: expected some of "
                        f"{', '.join(sorted(classes))}")
    settings = migrated_settings()
    marked = 0
    for cls, d in groups.items():
        files = [Path(f) for f in iter_files([d])]
        if not files:
            continue
        result = submit_paths(settings, [d], batch_name)
        for path, reason in result.skipped:
            click.echo(f"skipped {path}: {reason}", err=True)
        hashes = {sha256_hex(p.read_bytes()) for p in files}
        with session_scope(settings.resolved_database_url) as s:
            n = store_gold.mark_hashes(s, hashes, cls, f"folder:{d}", None)
        marked += n
        click.echo(f"{cls}: {n} gold images from {d}")
    click.echo(f"{marked} gold images; reviewers get them once they are scored")
