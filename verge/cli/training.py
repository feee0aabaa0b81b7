"""``verge train binary``, ``verge retrain`` and ``verge models``: heads trained, compared,
activated and rolled back."""
from __future__ import annotations

import json
from pathlib import Path

import click

from verge.clikit import UserError, progress_bar, with_database
from verge.settings import Settings


@click.group()
def train():
    """Train heads on stored embeddings."""


@train.command("binary")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=int, default=7, show_default=True)
@click.option("--class-weighting", is_flag=True, help="Weigh classes by n / (k * n_class).")
@click.option("--lr-halve-every", type=int, default=0, help="Halve the learning rate every N epochs.")
@click.option("--early-stopping", type=int, default=0, metavar="PATIENCE",
              help="Hold out a stratified 20 %% validation split, stop after PATIENCE epochs without a "
                   "better validation loss, keep the best epoch's weights; prints held-out metrics.")
@click.option("--augment", type=int, default=0, metavar="K",
              help="Add K augmented views of each minority-class image (embeddings cached).")
@click.option("--batch-size", type=int, default=3, show_default=True)
@click.option("--no-activate", is_flag=True, help="Record the head as a candidate only.")
@with_database
def train_binary_cmd(folder, seed, epochs, class_weighting, lr_halve_every, early_stopping, augment,
                     batch_size, no_activate, settings):
    """The seed's recipe (BCE, Adam lr 3e-3, batch 3, 7 epochs, fixed seed) on FOLDER/fields and
    FOLDER/roads; the seed's proposed fixes are flags, each off by default."""
    from models.training import Recipe
    from workers.training import train_binary_dir

    recipe = Recipe(seed=seed, epochs=epochs, batch_size=batch_size, class_weighting=class_weighting,
                    lr_halve_every=lr_halve_every, val_fraction=0.2 if early_stopping else 0.0,
                    patience=early_stopping)
    out = train_binary_dir(
        settings, folder, recipe, on_epoch=lambda st: click.echo(
            f"epoch {st.epoch}: loss {st.loss:.4f}  accuracy {st.accuracy:.4f}"
            + (f"  val loss {st.val['log_loss']:.4f}  val macro-F1 {st.val['macro_f1']:.3f}" if st.val else "")),
        progress_factory=progress_bar("embedding"), activate=not no_activate, augment=augment)
    for name, reason in out.failed:
        click.echo(f"left out {name}: {reason}", err=True)
    val = out.metrics.get("validation")
    if val:
        click.echo(f"held-out (best epoch {out.metrics['best_epoch']}): accuracy {val['accuracy']:.3f}, "
                   f"macro-F1 {val['macro_f1']:.3f}, ECE {val['ece']:.3f}, confusion {val['confusion']} "
                   f"(rows: field, road)")
    click.echo(f"model version {out.version_id} ({'active' if not no_activate else 'candidate'}): "
               f"{out.examples} examples ({out.reused} embeddings reused, {out.embedded} computed"
               + (f", {out.metrics['augmented_views']} augmented views" if augment else "")
               + f"), checkpoint kept in the database")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.option("--no-rescore", is_flag=True, help="Do not re-score open review tasks after a promotion.")
@with_database
def retrain(as_json, no_rescore, settings):
    """Train a three-class candidate on all labels; promote it only if it beats the active head."""
    from store.locks import LeaseLost, LockBusy
    from workers.retrain import retrain as run

    requested = []  # the re-score is requested as soon as the promotion commits
    try:
        out = run(settings, trigger="manual", on_epoch=None if as_json else (
            lambda st: click.echo(f"epoch {st.epoch}: loss {st.loss:.4f}  train acc {st.accuracy:.3f}"
                                  + (f"  val macro-F1 {st.val['macro_f1']:.3f}" if st.val else ""))),
            on_promoted=None if no_rescore else (lambda _v: requested.append(_after_activation(settings))))
    except LockBusy as exc:
        raise UserError(f"another retrain is running: {exc}") from None
    except LeaseLost as exc:
        raise UserError(f"this retrain stopped without promoting: {exc}") from None
    rescored = requested[0] if requested else None
    if as_json:
        click.echo(json.dumps({**out.as_dict(), "rescore": rescored}, indent=2, default=str))
        return
    if out.version_id is None:
        click.echo(f"nothing trained: {out.reason}")
        return
    c = out.candidate
    click.echo(f"candidate version {out.version_id}: held-out accuracy {c['accuracy']:.3f}, "
               f"macro-F1 {c['macro_f1']:.3f}, ECE {c['ece']:.3f} on {c['n']} images "
               f"({out.labels} labeled, {len(out.ties)} ties left for adjudication)")
    if out.active:
        click.echo(f"active version {out.active_version_id} on the same images: accuracy "
                   f"{out.active['accuracy']:.3f}, macro-F1 {out.active['macro_f1']:.3f}")
    click.echo(("PROMOTED: " if out.promoted else "kept as candidate: ") + out.reason)
    if out.suspects:
        click.echo(f"{out.suspects} training labels look wrong and were routed to review (suspect_label)")
    if out.seconds:
        click.echo("steps: " + ", ".join(f"{step} {s:.1f} s" for step, s in out.seconds.items()))
    if rescored:
        click.echo(rescored)


def _after_activation(settings: Settings) -> str:
    """Ask the workers to re-score open review tasks with the newly active head."""
    from workers.app import request_rescore

    problem = request_rescore(settings)
    if problem:
        return f"open review tasks not re-scored ({problem}); run `verge models rescore` later"
    return "re-scoring open review tasks with the new head (a worker does it)"


@click.group()
def models():
    """Model versions."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_database
def models_list(as_json, settings):
    """List model versions, newest first."""
    from store.browse import model_versions
    from store.db import session_scope

    with session_scope(settings.resolved_database_url) as s:
        rows = [{"id": m.id, "kind": m.kind, "state": m.state, "encoder": m.encoder,
                 "created_at": m.created_at.isoformat(), "metrics": m.metrics, "path": m.path}
                for m in model_versions(s)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no model versions yet; train one with `verge train binary DIR`")
    for r in rows:
        acc = r["metrics"].get("train_accuracy")
        click.echo(f"{r['id']:>4}  {r['state']:<11} {r['kind']:<12} {r['encoder']:<32} "
                   f"{r['created_at'][:19]}" + (f"  train acc {acc:.3f}" if acc is not None else ""))


@models.command("activate")
@click.argument("version", type=int)
@with_database
def models_activate(version, settings):
    """Make VERSION the active head (workers switch on their next chunk)."""
    from workers.activation import activate

    try:
        mv = activate(settings, version)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"version {mv.id} ({mv.kind}) is active; {_after_activation(settings)}")


@models.command("rollback")
@with_database
def models_rollback(settings):
    """Re-activate the previous head and reopen the review tasks the current one resolved."""
    from workers.activation import rollback

    try:
        old, new, reopened = rollback(settings)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"rolled back from version {old} to version {new}; {reopened} resolved review tasks reopened")


@models.command("rescore")
@with_database
def models_rescore(settings):
    """Re-score open review tasks with the active head (normally automatic after a promotion)."""
    click.echo(_after_activation(settings))
