"""A batch's failures are read a page at a time (page, API), never all at once; `--wait` polls
one count query."""
from __future__ import annotations

from store.db import session_scope
from store.images import batch_progress, find_batch

from .test_api import _token


def test_failures_are_paged_on_the_api_and_the_batch_page(client, seed, as_user, web_settings):
    for i in range(130):
        seed.image(data=b"bad %d" % i, batch="many", name=f"f{i:03d}.jpg", status="failed")
    seed.image(batch="many", name="ok.jpg")
    with session_scope(web_settings.resolved_database_url) as s:
        bid = find_batch(s, "many").id
        assert batch_progress(s, bid) == {"total": 131, "registered": 0, "queued": 0,
                                            "scored": 1, "failed": 130}
    seed.user("ann")
    auth = _token(seed, "ann")
    first = client.get("/api/v1/batches/many", headers=auth).get_json()
    assert first["failed"] == 130 and len(first["failures"]) == 100
    assert first["failures"][0]["name"] == "f000.jpg" and first["failures_offset"] == 0
    rest = client.get("/api/v1/batches/many?failures_offset=100", headers=auth).get_json()
    assert [f["name"] for f in rest["failures"]] == [f"f{i:03d}.jpg" for i in range(100, 130)]
    small = client.get("/api/v1/batches/many?failures_limit=5&failures_offset=7", headers=auth).get_json()
    assert [f["name"] for f in small["failures"]] == [f"f{i:03d}.jpg" for i in range(7, 12)]
    admin = as_user("boss", "admin")
    page = admin.get(f"/batches/{bid}").get_data(as_text=True)
    assert "f099.jpg" in page and "f100.jpg" not in page and "failures 1–100 of 130" in page
    page = admin.get(f"/batches/{bid}?failures_offset=100").get_data(as_text=True)
    assert "f100.jpg" in page and "f099.jpg" not in page and "previous" in page
