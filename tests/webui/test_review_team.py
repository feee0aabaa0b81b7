"""The review UI as a team uses it, in Chromium: signing out hands the images back, a label can
be corrected from the image's page and from browse, `u` takes back a skip, the phone layout
keeps the label buttons on screen, guidelines open with `?`, zoom shows the real pixels, and
the actions that are hard to take back ask first."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from store import review as store_review
from store.db import session_scope
from store.labels import consensus
from store.schema import Label, ModelVersion, ReviewSkip, ReviewTask

from .livebrowser import (
    DESKTOP, PHONE, chromium, live_app, on_screen, seed_showcase, sign_in, watch_errors,  # noqa: F401
)

pytestmark = pytest.mark.slow


def claims(url: str, owner: str) -> list[int]:
    with session_scope(url) as s:
        return sorted(s.scalars(select(ReviewTask.id).where(ReviewTask.state == "claimed",
                                                            ReviewTask.lease_owner == owner)))


def wait_for(predicate, page, timeout_s: float = 20) -> None:
    for _ in range(int(timeout_s * 10)):
        if predicate():
            return
        page.wait_for_timeout(100)
    raise AssertionError("condition not met in time")


def test_signing_out_hands_both_held_images_to_the_next_reviewer(live_app, chromium, seed):
    base, _ = live_app
    ids = seed_showcase(seed)
    seed.user("sam")
    t = ids["tasks"]
    page = chromium.new_page(viewport=DESKTOP)
    errors = watch_errors(page)
    releases = []
    page.on("response", lambda r: releases.append(r.status) if r.url.endswith("/review/api/release") else None)
    sign_in(page, base, "rob")
    on_screen(page, t[0])
    wait_for(lambda: claims(seed.url, "rob") == [t[0], t[1]], page)  # on screen + prefetched

    page.click("#sign-out button")
    page.wait_for_url(f"{base}/login")
    assert releases == [200]        # the page handed them back while still signed in
    assert claims(seed.url, "rob") == []
    with session_scope(seed.url) as s:  # another reviewer gets them at once, best first
        first = store_review.claim_next(s, seed.users["sam"], "sam", 600)
        second = store_review.claim_next(s, seed.users["sam"], "sam", 600, [first])
    assert [first, second] == [t[0], t[1]]
    assert not errors, errors
    page.close()


def test_relabel_from_the_item_page_and_from_browse(live_app, chromium, seed):
    base, _ = live_app
    ids = seed_showcase(seed)
    iid, rob = ids["done_image"], seed.users["rob"]
    page = chromium.new_page(viewport=DESKTOP)
    errors = watch_errors(page)
    sign_in(page, base, "rob", f"/browse/{iid}")
    assert "Road" in page.inner_text("#your-label h2")
    page.click("#your-label button[value=road_and_field]")
    page.wait_for_selector(".flash")
    assert "your label is now “Road & field”" in page.inner_text(".flashes")
    assert "Road & field" in page.inner_text("#your-label h2")

    def mine():
        with session_scope(seed.url) as s:
            return [(lab.cls, lab.source) for lab in s.scalars(
                select(Label).where(Label.image_id == iid, Label.user_id == rob).order_by(Label.id))]

    assert mine() == [("road", "review"), ("road_and_field", "correction")]  # history kept
    page.goto(f"{base}/browse")
    with page.expect_navigation():
        page.click(f'button[aria-label="Relabel image {iid} as Field"]')
    assert page.url == f"{base}/browse"
    assert "your label is now “Field”" in page.inner_text(".flashes")
    assert mine() == [("road", "review"), ("road_and_field", "correction"), ("field", "correction")]
    with session_scope(seed.url) as s:
        assert consensus(s).labels[iid] == "field"  # the newest is final for that reviewer
    page.goto(f"{base}/browse/{iid}")
    assert page.locator("table.table >> text=Road & field").count() >= 1  # the old one is listed
    assert not errors, errors
    page.close()


def test_u_takes_back_a_skip(live_app, chromium, seed):
    base, _ = live_app
    ids = seed_showcase(seed)
    t = ids["tasks"]
    page = chromium.new_page(viewport=DESKTOP)
    errors = watch_errors(page)
    sign_in(page, base, "rob")
    on_screen(page, t[0])
    page.keyboard.press("1")            # label the first
    on_screen(page, t[1])
    page.keyboard.press("s")            # skip the second
    on_screen(page, t[2])
    page.keyboard.press("u")            # takes back the skip, not the label
    on_screen(page, t[1])
    assert "Took back the skip" in page.inner_text("#toast")
    with session_scope(seed.url) as s:
        assert s.scalars(select(ReviewSkip)).all() == []
        assert s.get(ReviewTask, t[1]).state == "claimed" and s.get(ReviewTask, t[1]).lease_owner == "rob"
        assert s.get(ReviewTask, t[0]).state == "done"
    page.keyboard.press("2")            # and it can be labeled now
    on_screen(page, t[2])
    wait_for(lambda: claims(seed.url, "rob") == [t[2], t[3]], page)  # the prefetch is done
    page.reload()                       # the session's actions survive a reload
    on_screen(page, t[2])
    page.keyboard.press("u")            # undoes the "road" label of the second
    on_screen(page, t[1])
    page.keyboard.press("u")            # then the "field" label of the first
    on_screen(page, t[0])
    with session_scope(seed.url) as s:
        assert [lab.task_id for lab in s.scalars(select(Label).where(
            Label.user_id == seed.users["rob"], Label.source == "review"))] == [ids["done_task"]]
    assert not errors, errors
    page.close()


def test_phone_layout_keeps_the_buttons_on_screen(live_app, chromium, seed):
    base, _ = live_app
    ids = seed_showcase(seed)
    ctx = chromium.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = ctx.new_page()
    errors = watch_errors(page)
    sign_in(page, base, "rob")
    on_screen(page, ids["tasks"][0])
    for sel in ['#keys button[data-class="field"]', '#keys button[data-class="road"]',
                '#keys button[data-class="road_and_field"]', "#skip", "#undo"]:
        box = page.locator(sel).bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], (sel, box)
        assert box["height"] >= 44 and box["width"] >= 44, (sel, box)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # the menu is collapsed behind one button, and opens
    assert not page.is_visible("nav >> text=Dashboard")
    toggle = page.locator(".nav-toggle")
    assert toggle.bounding_box()["height"] >= 44
    toggle.tap()
    assert page.is_visible("nav >> text=Dashboard") and page.is_visible("#sign-out button")
    assert page.locator("nav >> text=Dashboard").bounding_box()["height"] >= 44
    page.tap('#keys button[data-class="road"]')  # a tap labels
    on_screen(page, ids["tasks"][1])
    assert not errors, errors
    ctx.close()


def test_guidelines_zoom_source_path_and_random_weights_banner(live_app, chromium, seed):
    base, _ = live_app
    ids = seed_showcase(seed)
    admin = chromium.new_page(viewport=DESKTOP)
    sign_in(admin, base, "ada", "/review/guidelines")
    admin.fill("#guidelines-source", "# Roads\n\nA **track** counts as a road.\n\n"
                                     "<script>window.owned = 1</script>\n\n[x](javascript:alert(1))")
    admin.click("text=Save guidelines")
    admin.wait_for_selector(".flash")
    admin.close()

    page = chromium.new_page(viewport=DESKTOP)
    errors = watch_errors(page)
    sign_in(page, base, "rob")
    on_screen(page, ids["tasks"][0])
    assert page.inner_text("#fname") == "survey/june/fields/1.jpg"      # the whole path
    assert "Random encoder weights" in page.inner_text("#random-banner")
    page.keyboard.press("?")
    assert page.is_visible("#guidelines")
    prose = page.locator("#guidelines .prose")
    assert prose.locator("h2").inner_text() == "Roads" and prose.locator("strong").inner_text() == "track"
    assert prose.locator("script").count() == 0 and "<script>" in prose.inner_text()  # shown as text
    assert prose.locator("a[href^=javascript]").count() == 0
    page.keyboard.press("1")             # keys do not label while the guidelines are open
    page.keyboard.press("Escape")
    with session_scope(seed.url) as s:
        assert s.get(ReviewTask, ids["tasks"][0]).state == "claimed"
    assert "720 × 480 px" in page.inner_text("#resolution")
    page.keyboard.press("z")             # native size: 100 %
    page.wait_for_function("() => document.getElementById('resolution').textContent.endsWith('shown at 100%')")
    assert page.evaluate("document.getElementById('photo').getBoundingClientRect().width") == 720
    page.click('#zoom button[data-zoom="fit"]')
    page.wait_for_function("() => !document.getElementById('resolution').textContent.endsWith('shown at 100%')")
    page.keyboard.press("1")             # and the confirmation shows next to the buttons
    page.wait_for_function("() => document.getElementById('toast').textContent.startsWith('Saved “Field”')")
    toast, keys = page.locator("#toast").bounding_box(), page.locator("#undo").bounding_box()
    assert 0 <= toast["y"] - (keys["y"] + keys["height"]) < 40
    assert not page.evaluate("window.owned === 1")
    assert not errors, errors
    page.close()


def test_rollback_asks_first_and_names_its_target(live_app, chromium, seed):
    base, _ = live_app
    ids = seed_showcase(seed)
    page = chromium.new_page(viewport=DESKTOP)
    errors = watch_errors(page)
    sign_in(page, base, "ada", "/admin/models")
    asked = []

    def answer(dialog, accept):
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda d: answer(d, False))
    page.click(f"text=Roll back to v{ids['old_model']}")
    page.wait_for_timeout(300)
    assert asked and asked[0].startswith(f"Roll back to v{ids['old_model']}?")
    with session_scope(seed.url) as s:
        assert s.get(ModelVersion, ids["model"]).state == "active"     # dismissed: nothing happened
    page.once("dialog", lambda d: answer(d, True))
    page.click(f"text=Roll back to v{ids['old_model']}")
    page.wait_for_url(f"{base}/admin/models/{ids['old_model']}")
    with session_scope(seed.url) as s:
        assert s.get(ModelVersion, ids["old_model"]).state == "active"
    # a rollback never goes back to the head it just left (issue 17): with no earlier head there
    # is nothing to roll back to, so nothing is offered
    with session_scope(seed.url) as s:
        assert s.get(ModelVersion, ids["model"]).state == "rolled_back"
    assert page.locator("button", has_text="Roll back to").count() == 0
    assert not [e for e in errors if "broker" not in e], errors
    page.close()


def test_a_batch_page_refreshes_itself_while_its_images_are_scored(live_app, chromium, seed):
    from store.schema import Image

    base, _ = live_app
    seed.user("rob")
    iid = seed.image(batch="june", status="queued")
    page = chromium.new_page(viewport=DESKTOP)
    errors = watch_errors(page)
    sign_in(page, base, "rob", "/batches/1")
    assert "0 of 1 scored, 1 queued" in page.inner_text("#batch-live")
    with session_scope(seed.url) as s:     # a worker finishes the image
        s.get(Image, iid).status = "scored"
    page.wait_for_function(
        "() => document.getElementById('batch-live').textContent.includes('1 of 1 scored')",
        timeout=20000)
    assert page.get_attribute("#batch-live", "data-refresh") == "0"  # done: it stops asking
    assert not errors, errors
    page.close()
