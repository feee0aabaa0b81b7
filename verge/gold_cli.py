"""``verge gold``: images with known classes, handed to reviewers unannounced (store/gold.py)."""
from __future__ import annotations

from pathlib import Path

import click

from models.classes import CLASSES

# A training folder's names (fields/, roads/) are accepted too.
FOLDER_CLASSES = {**{c: c for c in CLASSES}, "fields": "field", "roads": "road"}


def register(main: click.Group) -> None:
    from .cli import UserError, _friendly, _migrated, _settings

    @main.group()
    def gold():
        """Gold images: known classes that measure reviewers."""

    @gold.command("add")
    @click.argument("folder", type=click.Path(path_type=Path))
    @click.option("--batch", "batch_name", default="gold", show_default=True,
                  help="Batch the images are submitted in (they are scored like any image).")
    @_friendly
    def add(folder, batch_name):
        """Submit FOLDER/<class>/ images (field, road, road_and_field; or fields, roads) and
        mark each gold with its folder's class."""
        from sqlalchemy import select

        from store import gold as store_gold
        from store.blobs import sha256_hex
        from store.db import session_scope
        from store.schema import Image
        from store.sql import chunks
        from workers.submission import iter_files, submit_paths

        if not folder.is_dir():
            raise UserError(f"{folder} is not a folder")
        groups = {FOLDER_CLASSES[d.name]: d for d in sorted(folder.iterdir())
                  if d.is_dir() and d.name in FOLDER_CLASSES}
        if not groups:
            raise UserError(f"{folder} has no class folders: expected some of "
                            f"{', '.join(sorted(FOLDER_CLASSES))}")
        settings = _settings()
        _migrated(settings)
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
                ids = [i for part in chunks(sorted(hashes))
                       for i in s.scalars(select(Image.id).where(Image.sha256.in_(part)))]
                marked += store_gold.mark(s, [(i, cls) for i in ids], f"folder:{d}", None)
            click.echo(f"{cls}: {len(ids)} gold images from {d}")
        click.echo(f"{marked} gold images; reviewers get them once they are scored")
