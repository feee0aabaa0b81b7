"""Images, thumbnails, browse, the item page, queue, batches, dashboard."""
from __future__ import annotations

import re

from store.db import session_scope

from .conftest import jpeg, png


# --------------------------------------------------------------------------- images
def test_images_come_from_blob_storage_with_type_and_cache_headers(as_user, seed):
    j = seed.image(jpeg())
    p = seed.image(png())
    ann = as_user("ann")
    r = ann.get(f"/images/{j}")
    assert r.status_code == 200 and r.mimetype == "image/jpeg" and r.data == jpeg()
    etag = r.headers["ETag"].strip('"')
    assert len(etag) == 64
    cc = r.headers["Cache-Control"]
    assert "private" in cc and "immutable" in cc and "max-age=31536000" in cc and "public" not in cc
    assert ann.get(f"/images/{j}", headers={"If-None-Match": f'"{etag}"'}).status_code == 304
    assert ann.get(f"/images/{p}").mimetype == "image/png"


def test_bytes_that_are_not_a_known_image_are_never_rendered(as_user, seed):
    iid = seed.image(b"<html><script>alert(1)</script></html>", name="evil.jpg")
    r = as_user("ann").get(f"/images/{iid}")
    assert r.mimetype == "application/octet-stream" and r.headers["X-Content-Type-Options"] == "nosniff"


def test_thumbnails_are_made_once_and_cached(as_user, seed, web_settings):
    iid = seed.image(jpeg(size=(1200, 900)))
    ann = as_user("ann")
    r = ann.get(f"/images/{iid}/thumb")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    [thumb] = list((web_settings.data_dir / "thumbs").rglob("*.jpg"))
    from PIL import Image

    with Image.open(thumb) as im:
        assert max(im.size) == 320
    first = thumb.stat().st_mtime_ns
    assert ann.get(f"/images/{iid}/thumb").status_code == 200
    assert thumb.stat().st_mtime_ns == first
    # an undecodable image gets a placeholder rather than an error
    bad = seed.image(b"\xff\xd8\xff\xe0 truncated", name="broken.jpg")
    r = ann.get(f"/images/{bad}/thumb")
    assert r.status_code == 200 and r.mimetype == "image/svg+xml"


def test_sniffing_knows_the_common_formats():
    from webui.thumbs import sniff_mime

    assert sniff_mime(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert sniff_mime(b"GIF89a....") == "image/gif"
    assert sniff_mime(b"\0\0\0\x1cftypavif") == "image/avif"
    assert sniff_mime(b"<svg xmlns=") == "application/octet-stream"


# --------------------------------------------------------------------------- browse
def _browse_ids(browser, query: str = "") -> list[int]:
    html = browser.get(f"/browse{query}").get_data(as_text=True)
    return [int(x) for x in re.findall(r'href="/browse/(\d+)"', html)]


def test_browse_filters(as_user, seed):
    road, _ = seed.routed(0.9, p_road=0.55, zs_p_road=0.2, reasons="near_threshold,disagreement", batch="a")
    field = seed.image(batch="b")
    seed.predict(field, 0.1, 0.1)
    failed = seed.image(batch="b", status="failed")
    queued = seed.image(batch="a", status="queued")
    audit, audit_task = seed.routed(0.1, p_road=0.95, zs_p_road=0.9, reasons="audit", batch="b")
    ann = as_user("ann", "admin")  # an admin may label a task they did not claim
    ann.post("/review/api/claim", json={})
    ann.post("/review/api/label", json={"task_id": audit_task, "class": "road"})  # not the top one
    ann.post("/review/api/claim", json={"exclude": []})
    from store.images import find_batch

    with session_scope(seed.url) as s:
        a_id = find_batch(s, "a").id
    assert _browse_ids(ann) == [audit, queued, failed, field, road]
    assert _browse_ids(ann, f"?batch={a_id}") == [queued, road]
    assert _browse_ids(ann, "?status=failed") == [failed]
    assert _browse_ids(ann, "?class=road") == [audit, road]
    assert _browse_ids(ann, "?min=0.5&max=0.6") == [road]
    assert _browse_ids(ann, "?routed=yes") == [audit, road]
    assert _browse_ids(ann, "?routed=no") == [queued, failed, field]
    assert _browse_ids(ann, "?labeled=yes") == [audit]
    assert _browse_ids(ann, "?labeled=no&routed=yes") == [road]
    assert _browse_ids(ann, "?reason=disagreement") == [road]
    assert _browse_ids(ann, "?reason=audit") == [audit]
    assert _browse_ids(ann, "?status=bogus&class=nope") == [audit, queued, failed, field, road]
    bad = ann.get("/browse?min=x")  # a malformed number is refused, not silently dropped
    assert bad.status_code == 400 and "must be a number from 0 to 1" in bad.get_data(as_text=True)


def test_browse_pages_by_key(as_user, seed, monkeypatch):
    import webui.browse

    monkeypatch.setattr(webui.browse, "PAGE", 2)
    ids = [seed.image() for _ in range(5)][::-1]
    ann = as_user("ann")
    html = ann.get("/browse").get_data(as_text=True)
    assert [int(x) for x in re.findall(r'href="/browse/(\d+)"', html)] == ids[:2]
    nxt = re.search(r'href="(/browse\?after=\d+[^"]*)">Next page', html).group(1)
    html2 = ann.get(nxt.replace("&amp;", "&")).get_data(as_text=True)
    assert [int(x) for x in re.findall(r'href="/browse/(\d+)"', html2)] == ids[2:4]


def test_the_item_page_shows_predictions_labels_and_tasks(as_user, seed):
    mv = seed.model()
    iid = seed.image(name="north/field-7.jpg", batch="june")
    seed.predict(iid, None, 0.45, "near_threshold")
    pid = seed.predict(iid, 0.58, 0.45, "near_threshold,disagreement", model_version_id=mv)
    tid = seed.task(iid, 0.84, "near_threshold,disagreement", pid)
    ann, bob = as_user("ann"), as_user("bob", "admin")  # bob: a second opinion, by override
    ann.post("/review/api/claim", json={})
    ann.post("/review/api/label", json={"task_id": tid, "class": "road", "time_on_item_ms": 4200})
    bob.post("/review/api/label", json={"task_id": tid, "class": "road_and_field"})
    html = ann.get(f"/browse/{iid}").get_data(as_text=True)
    for text in ("north/field-7.jpg", "june", "zero-shot only", f"v{mv}", "0.580", "0.450",
                 "ann", "bob", "Road &amp; field", "4.2 s", f"#{tid}", "done"):
        assert text in html, text
    assert ann.get("/browse/4242").status_code == 404


# --------------------------------------------------------------------------- queue, batches
def test_queue_overview(as_user, seed):
    seed.routed(0.9, reasons="near_threshold", batch="a")
    seed.routed(0.8, reasons="near_threshold,disagreement", batch="b")
    seed.routed(0.7, reasons="audit", batch="b")
    ann = as_user("ann")
    ann.post("/review/api/claim", json={})
    html = ann.get("/queue").get_data(as_text=True)
    assert re.search(r"<strong>2</strong><span>open</span>", html)
    assert re.search(r"<strong>1</strong><span>being reviewed</span>", html)
    from store import review

    with session_scope(seed.url) as s:
        o = review.queue_overview(s)
    assert dict(o["by_reason"]) == {"near_threshold": 2, "disagreement": 1, "audit": 1}
    assert {b["batch"]: b["open"] for b in o["by_batch"]} == {"a": 1, "b": 2}
    assert o["reviewers"] == [{"name": "ann", "holding": 1, "labels": 0, "last_label_at": None}]


def test_batches_list_and_detail(as_user, seed):
    seed.routed(0.9, batch="june")
    seed.image(batch="june", status="failed")
    ann = as_user("ann")
    html = ann.get("/batches").get_data(as_text=True)
    assert "june" in html and "Upload a batch" not in html
    # a failure is shown as a failure (a red part of the bar), not as a full "done" bar
    assert "1 of 2 scored" in html and '<span class="s-failed">1 failed</span>' in html
    assert 'aria-label="1 of 2 scored, 1 failed"' in html
    assert 'aria-label="0 of 1 labeled"' in html  # review progress beside scoring
    from store.images import find_batch

    with session_scope(seed.url) as s:
        bid = find_batch(s, "june").id
    html = ann.get(f"/batches/{bid}").get_data(as_text=True)
    assert "<strong>2</strong><span>images</span>" in html and "<strong>1</strong><span>failed</span>" in html
    assert ann.get("/batches/999").status_code == 404


# --------------------------------------------------------------------------- dashboard
def test_dashboard_draws_histograms_agreement_and_labels_per_day(as_user, seed):
    mv = seed.model()
    tasks = []
    for p_head, p_zs in [(0.04, 0.1), (0.52, 0.3), (0.97, 0.8), (0.51, 0.6)]:
        iid = seed.image()
        pid = seed.predict(iid, p_head, p_zs, "near_threshold", model_version_id=mv)
        tasks.append(seed.task(iid, 0.5, "near_threshold", pid))
    ann = as_user("ann", "admin")  # labels the tasks without claiming each: an admin override
    for tid, cls in zip(tasks, ["field", "field", "road", "road_and_field"]):
        ann.post("/review/api/label", json={"task_id": tid, "class": cls})
    from store import browse

    with session_scope(seed.url) as s:
        d = browse.dashboard(s, mv)
    assert sum(d["head_hist"]) == 4 and d["head_hist"][0] == 1 and d["head_hist"][10] == 2 and d["head_hist"][19] == 1
    assert d["head_vs_zs"] == {"n": 4, "agree": 3}
    assert d["head_vs_reviewers"] == {"n": 3, "agree": 2, "left_out": 1}
    assert d["zs_vs_reviewers"] == {"n": 3, "agree": 3, "left_out": 1}
    assert d["labels_per_day"][-1][1] == 4 and len(d["labels_per_day"]) == 30
    html = ann.get("/dashboard").get_data(as_text=True)
    assert html.count('<svg class="chart"') == 3
    assert "75.0%" in html and "66.7%" in html and "100.0%" in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert ann.get("/dashboard?model=zs").status_code == 200
    assert ann.get("/dashboard?model=999").status_code == 200


def test_models_page_for_admins(as_user, seed):
    seed.model()
    html = as_user("ada", "admin").get("/admin/models").get_data(as_text=True)
    assert "binary" in html and "train accuracy <strong>0.900</strong>" in html


def test_histogram_svg_escapes_and_scales():
    from webui.charts import daily_bars, histogram

    svg = str(histogram([0, 5, 10, 0], band=(0.25, 0.5)))
    assert svg.startswith('<svg class="chart"') and svg.count('class="bar"') == 4
    assert "routing band 0.25–0.5" in svg
    bars = str(daily_bars([("2026-01-01", 3), ("<b>", 1)]))
    assert "&lt;b&gt;" in bars and "<b>" not in bars
