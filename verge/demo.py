"""``make demo`` / ``verge demo``: the whole spine on one machine, no servers, no network.

1. migrate the embedded database;
2. pick the encoder: the configured pretrained weights, or -- when they cannot be had here --
   the same architecture with random weights, said loudly wherever scores are shown;
3. train the seed's binary head on three quarters of the photos (the shared fields-roads set,
   else generated pictures);
4. start a worker, submit the held-out quarter plus two broken files, wait, print the table.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
from PIL import Image

from models.encoder import EncoderSpec, WeightsUnavailable
from workers.weights import verify_weights

from .batchstatus import wait_for_batch
from .clikit import ensure_migrated, progress_bar
from .settings import Settings
from .supervisor import supervise

SHARED_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fields-roads"
RANDOM_BANNER = ("RANDOM WEIGHTS ({spec}, VERGE_PRETRAINED=none): these scores are NOT meaningful; "
                 "they show the pipeline, not the model")


def generate_photos(folder: Path, per_class: int = 24, seed: int = 0) -> Path:
    """Synthetic stand-ins when the real photos are absent: green textured fields, grey roads
    running to the horizon. Enough to exercise every step; not a benchmark of anything."""
    rng = np.random.default_rng(seed)
    for cls in ("fields", "roads"):
        (folder / cls).mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
        h, w = 240, 320
        sky = np.array([150, 190, 235]) + rng.integers(-20, 20, 3)
        img = np.zeros((h, w, 3), np.float32)
        img[: h // 3] = sky
        grass = np.array([70, 140, 50]) + rng.integers(-25, 25, 3)
        img[h // 3:] = grass + rng.normal(0, 18, (h - h // 3, w, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / "fields" / f"field-{i:02d}.jpg",
                                                                  quality=90)
        road = img.copy()
        for y in range(h // 3, h):  # a trapezoid of asphalt narrowing to the horizon
            half = int((y - h // 3) / (h - h // 3) * w * 0.45) + 3
            cx = w // 2 + int(rng.integers(-4, 5))
            road[y, max(0, cx - half):cx + half] = 95 + rng.normal(0, 6, (min(w, cx + half) - max(0, cx - half), 3))
        Image.fromarray(road.clip(0, 255).astype(np.uint8)).save(folder / "roads" / f"road-{i:02d}.jpg",
                                                                   quality=90)
    return folder


def broken_files(folder: Path, sample: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    truncated = folder / "truncated.jpg"
    data = sample.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    text = folder / "notes.txt"
    text.write_text("field trip notes: this is not a photo\n")
    return [truncated, text]


def run_demo(settings: Settings, data: Path | None = None, serve_after: bool = True) -> None:
    from workers.training import labeled_files, train_binary_files

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_migrated(settings)
    spec = EncoderSpec(settings.encoder, settings.pretrained)
    banner = None
    try:
        verify_weights(spec)
    except WeightsUnavailable as exc:
        click.secho(f"note: {exc}.", fg="yellow", err=True)
        click.secho("      Falling back to random weights so the demo can run; set VERGE_PRETRAINED to "
                    "a weights file for real scores.", fg="yellow", err=True)
        settings = replace(settings, pretrained="none")
        banner = RANDOM_BANNER.format(spec=settings.encoder)
    if settings.pretrained.lower() == "none":
        banner = RANDOM_BANNER.format(spec=settings.encoder)

    folder = data or (SHARED_PHOTOS if SHARED_PHOTOS.is_dir() else None)
    if folder is None:
        folder = generate_photos(settings.data_dir / "demo-photos")
        click.echo(f"the shared photos are not here; generated {folder}")
    files = labeled_files(folder)
    rng = random.Random(7)
    rng.shuffle(files)
    held_out = files[: max(4, len(files) // 4)]
    train_files = files[len(held_out):]
    click.echo(f"1/3 training the seed's binary head on {len(train_files)} photos from {folder} "
               f"(encoder {settings.encoder}, weights {settings.pretrained})")
    out = train_binary_files(settings, train_files, f"demo-training:{folder}",
                             on_epoch=lambda st: click.echo(
                                 f"    epoch {st.epoch}: loss {st.loss:.4f}  accuracy {st.accuracy:.4f}"),
                             progress_factory=progress_bar("    embedding"))
    click.echo(f"    model version {out.version_id} is active")

    env = {**os.environ, "VERGE_DATA_DIR": str(settings.data_dir), "VERGE_PRETRAINED": settings.pretrained,
           "VERGE_ENCODER": settings.encoder}
    log_path = settings.data_dir / "demo-worker.log"
    click.echo(f"2/3 starting a worker (log: {log_path})")
    with open(log_path, "w") as log:
        worker = subprocess.Popen([sys.executable, "-m", "verge", "worker", "--loglevel", "INFO"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        from workers.submission import submit_paths

        bad = broken_files(settings.data_dir / "demo-broken", held_out[0][0])
        batch = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
        click.echo(f"3/3 submitting {len(held_out)} held-out photos and 2 broken files as batch {batch}")
        result = submit_paths(settings, [p for p, _ in held_out] + bad, batch)
        status = wait_for_batch(settings, result.batch_id, timeout=600)
        if worker.poll() is not None:
            raise click.ClickException(f"the worker stopped; see {log_path}")
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    truth = {str(p): cls for p, cls in held_out}
    print_table(settings, result.batch_id, banner, truth)
    click.echo(f"\nbatch {status['batch']}: {status['scored']} scored, {status['failed']} failed, "
               f"{status['routed']} routed to review (details: "
               f"{command(settings, 'status', status['batch'])})")
    password = demo_login(settings) if serve_after else None
    next_steps(settings, status["routed"], password)
    if banner:
        click.secho("!! " + banner + " !!", fg="red", bold=True)
    if serve_after:
        supervise(settings, web=True, env=env)


def command(settings: Settings, *args: str) -> str:
    """A `verge` command line that works when pasted into another terminal: this data folder,
    and the `verge` that is running now (``python -m verge`` when it is not on PATH)."""
    import shlex
    import shutil

    exe = "verge" if shutil.which("verge") else f"{shlex.quote(sys.executable)} -m verge"
    data = shlex.quote(str(settings.data_dir.resolve()))
    return f"VERGE_DATA_DIR={data} {exe} {' '.join(shlex.quote(a) for a in args)}"


def next_steps(settings: Settings, routed: int, demo_password: str | None) -> None:
    """The three things to do next, each with the exact command: a reviewer, the web UI,
    labeling."""
    url = f"http://{settings.web_host}:{settings.web_port}/review"
    click.secho("\nNext steps:", bold=True)
    click.echo(f"  1. create a reviewer (you are asked for a password):\n"
               f"       {command(settings, 'users', 'add', 'alice', '--role', 'reviewer')}")
    if demo_password:
        click.echo(f"  2. open the web UI: it is starting now at {url}\n"
                   f"       (or sign in as the demo admin: name 'demo', password '{demo_password}')")
    else:
        click.echo(f"  2. start the web UI, then open {url}:\n"
                   f"       {command(settings, 'web')}")
    click.echo(f"  3. label: sign in as alice; {routed} image{'s' if routed != 1 else ''} "
               f"{'are' if routed != 1 else 'is'} waiting. Keys: 1 field · 2 road · "
               f"3 road & field · s skip · u undo · ? guidelines")


def demo_login(settings: Settings) -> str:
    """(Re)create the demo admin with a fresh random password; return the password."""
    import secrets as _secrets

    from store import users as store_users
    from store.db import session_scope
    from webui.security import hash_password

    password = _secrets.token_urlsafe(9)
    with session_scope(settings.resolved_database_url) as s:
        user = store_users.user_by_name(s, "demo")
        if user is None:
            store_users.create_user(s, "demo", hash_password(password), "admin")
        else:
            store_users.set_password_hash(s, user.id, hash_password(password))
    return password


def print_table(settings: Settings, batch_id: int, banner: str | None, truth: dict | None = None) -> None:
    from store.db import session_scope
    from store.images import latest_predictions

    with session_scope(settings.resolved_database_url) as s:
        rows = latest_predictions(s, batch_id)
    click.echo("")
    if banner:
        click.secho("!! " + banner + " !!", fg="red", bold=True)
    names = {link.source_name: shown_name(link.source_name) for link, _, _ in rows}
    width = max([len("image"), *map(len, names.values())])
    header = (f"{'image':<{width}} {'truth':<6} {'head p(road)':>12} {'zs p(field)':>11} "
              f"{'zs p(road)':>10}  {'class':<6} routed")
    click.echo(header)
    click.echo("-" * len(header) + "-" * 24)
    correct = n = 0
    for link, image, pred in rows:
        name = f"{names[link.source_name]:<{width}}"
        t = (truth or {}).get(link.source_name, "")
        if image.status == "failed":
            click.echo(f"{name} {t:<6} {'failed: ' + (image.error or '')}")
            continue
        if pred is None:
            click.echo(f"{name} {t:<6} {image.status}")
            continue
        head = f"{pred.p_road:.3f}" if pred.p_road is not None else "-"
        routed = f"yes: {pred.reasons}" if pred.routed else "no"
        click.echo(f"{name} {t:<6} {head:>12} {pred.zs_probs['field']:>11.3f} {pred.zs_p_road:>10.3f}  "
                   f"{pred.predicted_class:<6} {routed}")
        if t:
            n += 1
            correct += pred.predicted_class == t
    if n:
        click.echo(f"\nhead accuracy on the {n} held-out photos: {correct / n:.3f}"
                   + (" (random encoder weights)" if banner else ""))


def shown_name(source_name: str, width: int = 48) -> str:
    """The folder and file name; a longer one loses the end of its folder part, never the
    start of either or the file name (which tells fields/1.jpg from roads/1.jpg)."""
    name = "/".join(Path(source_name).parts[-2:])
    if len(name) <= width:
        return name
    folder, _, base = name.rpartition("/")
    if len(base) >= width - 4:  # a very long file name: its start and its suffix
        suffix = Path(base).suffix[:8]
        return base[:width - 1 - len(suffix)] + "…" + suffix
    keep = width - len(base) - 2  # "…" and "/"
    return f"{folder[:keep]}…/{base}"
