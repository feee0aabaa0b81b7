"""A real browser with two reviewers per task: a reviewer bulk-labels five similar images with the
keyboard, and an admin adjudicates a conflict. Saves test-artifacts/similar.png."""
from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from store.db import session_scope
from store.schema import Label, ReviewTask

from .conftest import make_app
from .livebrowser import ARTIFACTS, chromium, picture, serve, sign_in, watch_errors  # noqa: F401


@pytest.fixture
def live_team(web_settings):
    with serve(make_app(web_settings, reviews_per_task=2, gold_fraction=0.0)) as base:
        yield base


def test_bulk_label_five_similar_images_by_keyboard_then_adjudicate(live_team, chromium, seed,
                                                                     tiny_encoder):
    from PIL import Image

    from store import overlap
    from store.embeddings import save_embeddings

    seed.user("ann")
    seed.user("bob")
    seed.user("boss", "admin")
    # seven field photos (one on screen, six similar) and a conflict waiting for the admin
    made = []
    for i in range(7):
        data = picture("field", i)
        iid = seed.image(data, name=f"survey/field-{i:02d}.jpg")
        pid = seed.predict(iid, 0.45, 0.35, "near_threshold")
        made.append((iid, seed.task(iid, 0.9 if i == 0 else 0.1, "near_threshold", pid), data))
    c_iid, c_tid = seed.routed(0.05, p_road=0.48, zs_p_road=0.66, data=picture("road", 9))
    vecs = tiny_encoder.encode_images([Image.open(io.BytesIO(d)).convert("RGB") for *_, d in made])
    with session_scope(seed.url) as s:
        save_embeddings(s, tiny_encoder.key, {m[0]: v for m, v in zip(made, vecs)})
        overlap.post_label(s, c_tid, seed.users["ann"], "ann", "road", "review", 2)
        overlap.post_label(s, c_tid, seed.users["bob"], "bob", "field", "review", 2)

    page = chromium.new_page(viewport={"width": 1360, "height": 1000})
    errors = watch_errors(page)
    # straight to /review after signing in, loaded once: a reload would race the old page's
    # pagehide release against the new claim
    sign_in(page, live_team, "ann")
    page.wait_for_function(
        "(id) => document.getElementById('task-meta').textContent.startsWith('Task #' + id + ' ')",
        arg=made[0][1])
    page.wait_for_selector("#similar:not([hidden]) .similar-item")
    assert page.locator(".similar-item").count() == 6
    page.keyboard.press("x")
    for _ in range(4):
        page.keyboard.press("ArrowRight")
        page.keyboard.press("x")
    page.wait_for_function("() => document.querySelectorAll('.similar-item.selected').length === 5")
    chosen = [int(x) for x in page.eval_on_selector_all(
        ".similar-item.selected", "els => els.map(e => e.dataset.imageId)")]
    page.keyboard.press("Shift+Digit1")
    page.wait_for_function("() => document.querySelectorAll('.similar-item.labeled').length === 5")
    assert "Labeled 5 as Field" in page.inner_text("#similar-note")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "similar.png"))
    with session_scope(seed.url) as s:
        bulk = list(s.scalars(select(Label).where(Label.source == "bulk")))
    assert sorted(lab.image_id for lab in bulk) == sorted(chosen)
    assert {(lab.user_id, lab.cls) for lab in bulk} == {(seed.users["ann"], "field")}
    page.keyboard.press("z")  # and the bulk action can be taken back
    page.wait_for_function("() => document.querySelectorAll('.similar-item.labeled').length === 0")
    with session_scope(seed.url) as s:
        assert list(s.scalars(select(Label).where(Label.source == "bulk"))) == []
    assert not errors, errors
    page.close()

    page = chromium.new_page(viewport={"width": 1360, "height": 900})
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, live_team, "boss", "/adjudicate")
    page.click(f"a[href='/adjudicate/{c_tid}']")
    page.wait_for_selector("#adjudicate-photo")
    text = page.inner_text("main")
    assert "0.480" in text and "0.660" in text and "ann" in text and "bob" in text
    page.click("#decide button[value=road]")
    page.wait_for_load_state()
    assert "is final: road" in page.inner_text(".flashes")
    assert not errors, errors
    with session_scope(seed.url) as s:
        t = s.get(ReviewTask, c_tid)
        assert (t.state, t.final_cls, t.adjudicated_by) == ("done", "road", seed.users["boss"])
    page.close()
