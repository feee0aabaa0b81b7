"""``verge export`` and ``verge import label-studio``: the command-line side of
``store/export.py`` (csv, jsonl), ``store/datasets.py`` (imagefolder, hf) and
``store/label_studio.py``."""
from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import click

from verge.clikit import UserError, ensure_migrated, find_batch_id, friendly, load_settings, with_database
from verge.settings import Settings


@click.command()
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "imagefolder", "hf", "label-studio"]),
              default="csv", show_default=True,
              help="csv/jsonl: one row per image. imagefolder: DIR/[SPLIT/]CLASS/ image files. hf: the "
                   "same plus metadata.parquet, for datasets.load_dataset('imagefolder', data_dir=DIR). "
                   "label-studio: tasks JSON with verge's predictions as pre-annotations.")
@click.option("--batch", default=None, help="Only this batch (name or number).")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Write here instead of standard output (the folder, for imagefolder and hf).")
@click.argument("dest", required=False, type=click.Path(path_type=Path))
@click.option("--split", default=None, metavar="NAME=F,...",
              help="imagefolder/hf: split by image hash, e.g. train=0.8,val=0.2.")
@click.option("--embeddings", is_flag=True, help="hf: add each image's stored CLIP embedding.")
@click.option("--image-url", default=None, metavar="TEMPLATE",
              help="label-studio: where Label Studio loads each image; {id} and {sha256} are "
                   "replaced (default: this verge web UI, http://VERGE_WEB_HOST:VERGE_WEB_PORT/images/{id}).")
@friendly
def export(fmt, batch, output, dest, split, embeddings, image_url):
    """Per image: hash, source name, latest prediction, model version, human labels, final label.
    DEST is the same as --output."""
    from store.db import session_scope
    from store.export import write_export

    settings = load_settings()
    if dest and output and dest != output:
        raise UserError("give the destination once: DEST or --output")
    output = output or dest
    if fmt not in ("csv", "jsonl"):
        return export_more(settings, fmt, batch, output, split, embeddings, image_url)
    if split or embeddings or image_url:
        raise UserError("--split, --embeddings and --image-url go with --format imagefolder, hf or label-studio")
    ensure_migrated(settings)
    with session_scope(settings.resolved_database_url) as s:
        batch_id = find_batch_id(s, batch) if batch else None
        if output:
            with open(output, "w", newline="", encoding="utf-8") as fh:
                n = write_export(s, fh, fmt, batch_id)
            click.echo(f"wrote {n} images to {output}", err=True)
        else:
            write_export(s, sys.stdout, fmt, batch_id)


@click.group("import")
def import_():
    """Bring labels made elsewhere into verge."""


@import_.command("label-studio")
@click.argument("export_file", type=click.Path(path_type=Path))
@click.option("--user", "user_map", multiple=True, metavar="LS_USER=NAME",
              help="Map a Label Studio annotator (numeric id or email) to an existing verge user; "
                   "unmapped annotators get a verge user of their own (a reviewer without a password).")
@with_database
def import_label_studio_cmd(export_file, user_map, settings):
    """Labels from a Label Studio JSON export of tasks made by `verge export --format label-studio`."""
    import_label_studio(settings, export_file, user_map)


def url_template(template: str):
    """``{id}`` and ``{sha256}`` filled in per image; anything else in braces is refused."""
    try:
        template.format(id=1, sha256="0" * 64)
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(f"--image-url {template!r}: only {{id}} and {{sha256}} may appear in braces "
                        f"({exc})") from None
    return lambda row: template.format(id=row["image_id"], sha256=row["sha256"])


def export_more(settings: Settings, fmt: str, batch, output: Path | None, split, embeddings,
                image_url) -> None:
    """``--format imagefolder``, ``hf`` and ``label-studio``."""
    from store.blobs import BlobStore
    from store.datasets import ExportError, parse_split, write_dataset
    from store.db import session_scope
    from store.label_studio import iter_tasks_json

    if fmt == "label-studio":
        if split or embeddings:
            raise UserError("--split and --embeddings go with --format imagefolder or hf")
        template = image_url or f"http://{settings.web_host}:{settings.web_port}/images/{{id}}"
        to_url = url_template(template)
        ensure_migrated(settings)
        with session_scope(settings.resolved_database_url) as s:
            batch_id = find_batch_id(s, batch) if batch else None
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
    ensure_migrated(settings)
    with session_scope(settings.resolved_database_url) as s:
        batch_id = find_batch_id(s, batch) if batch else None
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
