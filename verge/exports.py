"""`verge export --format imagefolder|hf|label-studio` and `verge import label-studio`: the
command-line side of ``store/datasets.py`` and ``store/label_studio.py``."""
from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import click

from .cli import UserError
from .settings import Settings


def _batch_id(session, batch) -> int | None:
    from store.images import find_batch

    if not batch:
        return None
    found = find_batch(session, batch)
    if found is None:
        raise UserError(f"no batch named or numbered {batch!r}")
    return found.id


def url_template(template: str):
    """``{id}`` and ``{sha256}`` filled in per image; anything else in braces is refused."""
    try:
        template.format(id=1, sha256="0" * 64)
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(f"--image-url {template!r}: only {{id}} and {{sha256}} may appear in braces "
                        f"({exc})") from None
    return lambda row: template.format(id=row["image_id"], sha256=row["sha256"])


def export_more(settings: Settings, fmt: str, batch, output: Path | None, split, embeddings,
                image_url, migrated) -> None:
    from store.blobs import BlobStore
    from store.datasets import ExportError, parse_split, write_dataset
    from store.db import session_scope
    from store.label_studio import iter_tasks_json

    if fmt == "label-studio":
        if split or embeddings:
            raise UserError("--split and --embeddings go with --format imagefolder or hf")
        template = image_url or f"http://{settings.web_host}:{settings.web_port}/images/{{id}}"
        to_url = url_template(template)
        migrated(settings)
        with session_scope(settings.resolved_database_url) as s:
            batch_id = _batch_id(s, batch)
            if output:
                n = 0
                with open(output, "w", encoding="utf-8") as fh:
                    for piece in iter_tasks_json(s, to_url, batch_id):
                        fh.write(piece)
                        n += piece.startswith(("[\n{", ",\n"))
                click.echo(f"wrote {n} Label Studio tasks to {output} (labeling config: "
                           f"README, 'Label Studio')", err=True)
            else:
                for piece in iter_tasks_json(s, to_url, batch_id):
                    sys.stdout.write(piece)
        return
    if image_url:
        raise UserError("--image-url goes with --format label-studio")
    if output is None:
        raise UserError(f"--format {fmt} writes a folder: give it as DEST (verge export --format {fmt} DIR)")
    try:
        splits = parse_split(split)
    except ExportError as exc:
        raise UserError(str(exc)) from None
    if embeddings and fmt != "hf":
        raise UserError("--embeddings goes with --format hf")
    migrated(settings)
    with session_scope(settings.resolved_database_url) as s:
        batch_id = _batch_id(s, batch)
        try:
            report = write_dataset(s, BlobStore(settings.resolved_blob_dir), output, fmt, batch_id,
                                   splits, embeddings)
        except ExportError as exc:
            raise UserError(str(exc)) from None
    click.echo(f"wrote {report.summary()} to {output}", err=True)


def import_label_studio(settings: Settings, path: Path, user_map: tuple[str, ...]) -> None:
    from store.db import session_scope
    from store.label_studio import LabelStudioError, import_export
    from webui.security import hash_password

    mapping = {}
    for item in user_map:
        key, sep, name = item.partition("=")
        if not sep or not key.strip() or not name.strip():
            raise UserError(f"--user {item!r} is not LS_USER=NAME (e.g. --user 3=alice)")
        mapping[key.strip()] = name.strip()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not JSON: {exc}") from None
    try:
        with session_scope(settings.resolved_database_url) as s:
            # imported annotators label elsewhere; they get a password nobody knows
            report = import_export(s, data, mapping, lambda: hash_password(secrets.token_urlsafe(24)))
    except LabelStudioError as exc:
        raise UserError(f"{path}: {exc}; nothing was imported") from None
    for who, (name, created) in sorted(report.users.items()):
        click.echo(f"label studio {who} -> verge user {name}" + (" (created)" if created else ""))
    skipped = "".join(f"; {n} {why}" for why, n in sorted(report.skipped.items()))
    click.echo(f"imported {report.created} labels ({report.already} already imported{skipped}); "
               f"{report.tasks_closed} open review tasks closed")
