"""The web UI and API with images in object storage (a real moto_server process): admins register
a prefix in place, reviewers see the images through this server (the bucket is never public) with
the same login, ETag and cache headers, and bad input answers 400/403 with nothing registered."""
from __future__ import annotations

import dataclasses

from sqlalchemy import func, select

from store.db import session_scope
from store.schema import Batch, Image

from .conftest import jpeg, login, make_app, png
from .test_api import _token


def _count(url, model):
    with session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(model))


def test_prefix_registered_in_place_and_images_proxied_from_the_bucket(web_settings, seed, s3):
    bucket = s3.bucket()
    settings = dataclasses.replace(web_settings, blob_url=f"s3://{bucket}/blobs")
    app = make_app(settings)
    client = s3.client()
    client.put_object(Bucket=bucket, Key="shots/field one.jpg", Body=jpeg())
    client.put_object(Bucket=bucket, Key="shots/ümlaut/road.png", Body=png())
    client.put_object(Bucket=bucket, Key="shots/readme.md", Body=b"# not an image")
    seed.user("root", "admin")
    seed.user("ann")
    api = app.test_client()
    auth = _token(seed, "root")

    # bad input first: nothing registered by any of it
    assert api.post("/api/v1/registrations", json={"url": "s3://"}, headers=auth).status_code == 400
    r = api.post("/api/v1/registrations", json={"url": "s3://no-such-bucket-x/a/"}, headers=auth)
    assert r.status_code == 400 and "NoSuchBucket" in r.get_json()["error"]
    r = api.post("/api/v1/registrations", json={"url": f"s3://{bucket}/shots/"},
                 headers=_token(seed, "ann"))
    assert r.status_code == 403
    assert _count(web_settings.resolved_database_url, Batch) == 0

    r = api.post("/api/v1/registrations", json={"url": f"s3://{bucket}/shots/", "batch": "shots"},
                 headers=auth)
    assert r.status_code == 201, r.get_data(as_text=True)
    out = r.get_json()
    assert out["submitted"] == 2 and out["new"] == 2 and len(out["skipped"]) == 1
    # the web form does the same for an admin (linking the same objects again)
    admin = login(app, "root")
    r = admin.post("/batches/register", data={"url": f"s3://{bucket}/shots/", "batch": "again"})
    assert r.status_code == 302
    r = admin.post("/batches/register", data={"url": "http://elsewhere/x"})
    assert r.status_code == 400 and "s3://BUCKET/PREFIX" in r.get_data(as_text=True)

    with session_scope(web_settings.resolved_database_url) as s:
        ids = {im.source_name.rsplit("/", 1)[-1]: im.id for im in s.scalars(select(Image))}
    assert len(ids) == 2
    anon = app.test_client()
    assert anon.get(f"/images/{ids['field one.jpg']}").status_code in (302, 401)
    ann = login(app, "ann")
    r = ann.get(f"/images/{ids['field one.jpg']}")
    assert r.status_code == 200 and r.data == jpeg() and r.mimetype == "image/jpeg"
    cc = r.headers["Cache-Control"]
    assert "private" in cc and "immutable" in cc and "public" not in cc
    etag = r.headers["ETag"].strip('"')
    assert ann.get(f"/images/{ids['field one.jpg']}", headers={"If-None-Match": f'"{etag}"'}).status_code == 304
    assert ann.get(f"/images/{ids['road.png']}").mimetype == "image/png"
    assert api.get(f"/api/v1/images/{ids['road.png']}", headers=auth).data == png()
    r = ann.get(f"/images/{ids['field one.jpg']}/thumb")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"

    # replaced after registration: the registered version is gone, and nothing else is served
    client.put_object(Bucket=bucket, Key="shots/field one.jpg", Body=png())
    r = ann.get(f"/images/{ids['field one.jpg']}")
    assert r.status_code == 404 and "replaced" in r.get_data(as_text=True)
