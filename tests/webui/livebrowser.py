"""A live `verge web` app in a thread, Chromium through Playwright, and a seeded data set that
gives every page something to show. Shared by the browser tests of the review UI: they import
the fixtures (``live_app``, ``chromium``) and the page helpers from here."""
from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

import pytest

from tests.services import free_port

from .conftest import PASSWORD, make_app, need

CHROMIUM = os.environ.get("VERGE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


@contextlib.contextmanager
def serve(app):
    """``app`` served by a threaded server on a free port while the block runs; its base URL."""
    from werkzeug.serving import make_server

    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def live_app(web_settings):
    """(base URL, app) of a threaded server on a free port."""
    app = make_app(web_settings)
    with serve(app) as base:
        yield base, app


@pytest.fixture
def chromium():
    need("Chromium", Path(CHROMIUM).exists() or bool(shutil.which(CHROMIUM)),
         f"no browser at {CHROMIUM} (apt-get install chromium, or set VERGE_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        need("Playwright", False, "pip install playwright")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def watch_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return errors


def submit_login(page, name: str) -> None:
    """Fill in and send the sign-in form on the page shown."""
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def sign_in(page, base: str, name: str, path: str = "/review") -> None:
    page.goto(f"{base}/login?next={path}")
    submit_login(page, name)
    page.wait_for_url(f"{base}{path}")


def on_screen(page, task_id: int) -> None:
    """Wait until the review page shows ``task_id`` with its image decoded."""
    page.wait_for_function(
        "(id) => document.getElementById('task-meta').textContent.startsWith('Task #' + id + ' ')"
        " && document.getElementById('photo').complete"
        " && document.getElementById('photo').naturalWidth > 0", arg=task_id)


def picture(kind: str, seed: int, size=(720, 480)) -> bytes:
    """Stand-ins that look like the real thing: a field, a road, a road through a field."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    img = np.zeros((h, w, 3), np.float32)
    img[: h // 3] = np.array([150, 190, 235]) + np.linspace(0, 30, h // 3)[:, None, None]
    img[h // 3:] = np.array([86, 146, 58]) + rng.normal(0, 16, (h - h // 3, w, 3))
    if kind in ("road", "road_and_field"):
        for y in range(h // 3, h):
            half = int((y - h // 3) / (h - h // 3) * w * (0.45 if kind == "road" else 0.18)) + 2
            cx = w // 2
            img[y, cx - half:cx + half] = 96 + rng.normal(0, 5, (2 * half, 3))
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=88)
    return buf.getvalue()


def seed_showcase(seed) -> dict:
    """Every page with something on it: routed tasks, labels, a failed image, two model versions
    (one with per-epoch curves and a long training-folder path). Returns the ids."""
    import datetime as dt

    from store.db import session_scope
    from store.schema import Image, Label, ModelVersion, ReviewTask

    seed.user("rob")
    seed.user("ada", "admin")
    curves = [{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5 + e / 25,
               "val": {"log_loss": 1.1 / e, "macro_f1": 0.45 + e / 24}, "lr": 0.001}
              for e in range(1, 11)]
    held = {"n": 40, "accuracy": 0.85, "macro_f1": 0.84, "ece": 0.05, "log_loss": 0.4,
            "classes": ["field", "road"], "confusion": [[18, 2], [4, 16]],
            "per_class": {"field": {"precision": 0.82, "recall": 0.9, "f1": 0.86, "support": 20},
                          "road": {"precision": 0.89, "recall": 0.8, "f1": 0.84, "support": 20}}}
    with session_scope(seed.url) as s:
        old = ModelVersion(kind="binary", classes=["field", "road"], encoder="verge-tiny:none",
                           path="/nowhere/v1.pt", state="retired",
                           activated_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2),
                           metrics={"train_accuracy": 0.8})
        s.add(old)
        s.flush()
        mv = ModelVersion(
            kind="binary", classes=["field", "road"], encoder="verge-tiny:none",
            path="/srv/verge/var/checkpoints/very/long/training/folder/path/that/goes/on/"
                 "and/on/2026-06-01T12-00-00/head-binary-v2.pt", state="active",
            activated_at=dt.datetime.now(dt.timezone.utc),
            metrics={"curves": curves, "best_epoch": 8, "held_out": held,
                     "active_held_out": {**held, "accuracy": 0.8}, "active_version": old.id,
                     "labels": 40, "examples": 120,
                     "source": "/srv/data/training/a/very/long/folder/name/with/many/levels/"
                               "fields-and-roads-2026-june-county-survey-final-final",
                     "decision": "promoted: held-out macro-F1 0.84 beats 0.80"})
        s.add(mv)
        s.flush()
        old_id, mv_id = old.id, mv.id
    routed = [(0.96, 0.52, 0.31, "near_threshold,disagreement", "field"),
              (0.90, 0.45, 0.62, "near_threshold,disagreement", "road"),
              (0.80, 0.58, 0.55, "near_threshold", "road_and_field"),
              (0.70, 0.47, 0.40, "near_threshold", "field"),
              (0.30, 0.85, 0.81, "audit", "road")]
    tasks, images = [], []
    for i, (prio, head, zs, reasons, kind) in enumerate(routed):
        iid = seed.image(picture(kind, i), name=f"survey/june/{kind}s/{i + 1}.jpg",
                         batch="june-survey")
        pid = seed.predict(iid, head, zs, reasons, model_version_id=mv_id)
        tasks.append(seed.task(iid, prio, reasons, pid))
        images.append(iid)
    done_iid = seed.image(picture("road", 9, (275, 183)), name="roads/1.jpg", batch="june-survey")
    seed.predict(done_iid, 0.51, 0.6, "near_threshold", model_version_id=mv_id)
    done_task = seed.task(done_iid, 0.5)
    failed = seed.image(b"not an image", name="broken/not-a-photo.jpg", batch="broken-upload",
                        status="failed")
    with session_scope(seed.url) as s:
        s.get(Image, failed).error = "cannot identify image file"
        s.get(Image, done_iid).width, s.get(Image, done_iid).height = 275, 183
        t = s.get(ReviewTask, done_task)
        t.state, t.lease_owner = "done", "rob"
        s.add(Label(image_id=done_iid, user_id=seed.users["rob"], task_id=done_task,
                    source="review", cls="road", time_on_item_ms=2100,
                    created_at=dt.datetime.now(dt.timezone.utc)))
    return {"tasks": tasks, "images": images, "done_image": done_iid, "done_task": done_task,
            "failed_image": failed, "model": mv_id, "old_model": old_id}
