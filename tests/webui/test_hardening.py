"""What an attacker on 127.0.0.1 tries, against a real `verge web` where it matters: a cookie
replayed after logout, a CSRF token planted before sign-in, 30 parallel wrong passwords, a
name sprayed while its owner signs in from elsewhere, formula-named files exported to CSV, a
thumbnail bomb, a label for a task never claimed, the Server banner."""
from __future__ import annotations

import csv
import io
import json
import threading

import pytest

from store.db import session_scope
from tests.conftest import TINY, verge

from .conftest import PASSWORD, csrf_token, login, make_app
from .live import LiveWeb


@pytest.fixture
def live(tmp_path):
    started = []

    def start(**env) -> LiveWeb:
        web = LiveWeb({**TINY, "VERGE_DATA_DIR": str(tmp_path / "var"), **env},
                      tmp_path / f"web-{len(started)}.log")
        started.append(web)
        return web
    yield start
    for web in started:
        web.stop()


# --------------------------------------------------------------------------- sessions that end
def test_a_cookie_replayed_after_logout_is_refused_by_the_live_server(live):
    web = live()
    web.add_user("ann")
    web.start()
    ann = web.client()
    assert ann.login("ann").status == 302
    stolen = dict(ann.cookies)
    token = ann.csrf("/review")
    assert ann.get("/review").status == 200
    assert ann.request("POST", "/logout", form={"csrf_token": token}).status == 302
    # the saved cookie, from another client: signed and unexpired, but its session is over
    thief = web.client("127.0.0.9")
    thief.cookies = dict(stolen)
    r = thief.get("/review")
    assert r.status == 302 and "/login" in r.headers["Location"]
    thief.cookies = dict(stolen)
    claim = thief.request("POST", "/review/api/claim", body=b"{}",
                          headers={"Content-Type": "application/json", "X-CSRFToken": token})
    assert claim.status in (400, 401), claim.body  # never a claimed task
    assert "task" not in claim.body or '"task_id"' not in claim.body
    # and no response banners the server's version
    for resp in (r, claim, web.client().get("/login")):
        assert "Server" not in resp.headers, resp.headers["Server"]


def test_role_change_password_change_and_sign_out_everywhere_end_sessions(app, seed, as_user):
    ada = as_user("ada", "admin")
    seed.user("bob")
    from store import sessions

    def signed_in(browser) -> bool:
        return browser.get("/review").status_code == 200

    bob_laptop, bob_phone = login(app, "bob"), login(app, "bob")
    with session_scope(seed.url) as s:
        assert sessions.count(s, seed.users["bob"]) == 2
    r = ada.post(f"/admin/users/{seed.users['bob']}/signout", data={"csrf_token": ada.token})
    assert r.status_code == 302
    assert "2 sessions ended" in ada.get("/admin/users").get_data(as_text=True)
    assert not signed_in(bob_laptop) and not signed_in(bob_phone)
    with session_scope(seed.url) as s:
        assert sessions.count(s, seed.users["bob"]) == 0

    bob = login(app, "bob")
    assert ada.post(f"/admin/users/{seed.users['bob']}/role", data={"role": "admin"}).status_code == 302
    assert not signed_in(bob)  # the old session had the old role
    bob = login(app, "bob")
    assert bob.get("/admin/users").status_code == 200  # signed in again: the new role

    from store import users
    from webui.security import hash_password

    with session_scope(seed.url) as s:  # as `verge users passwd` does
        users.set_password_hash(s, seed.users["bob"], hash_password("another password"))
    assert not signed_in(bob)
    assert signed_in(ada)  # nobody else's session ended
    # logging out ends only that browser's session
    laptop, phone = login(app, "bob", "another password"), login(app, "bob", "another password")
    assert laptop.post("/logout").status_code == 302
    assert not signed_in(laptop) and signed_in(phone)


def test_the_session_and_csrf_token_are_new_after_sign_in(live):
    web = live()
    web.add_user("ada", "admin")
    web.start()
    victim = web.client()
    planted = victim.csrf("/login")          # the attacker set this session cookie earlier
    planted_cookie = victim.cookies["verge_session"]
    assert victim.login("ada").status == 302
    assert victim.cookies["verge_session"] != planted_cookie
    fresh = victim.csrf("/review")
    assert fresh != planted
    # the planted token no longer works for the signed-in victim
    r = victim.request("POST", "/admin/users", form={"csrf_token": planted, "name": "eve",
                                                     "password": "eve's password", "role": "admin"})
    assert r.status == 400 and "security token" in r.body
    r = victim.request("POST", "/admin/users", form={"csrf_token": fresh, "name": "carl",
                                                     "password": "carl's password", "role": "reviewer"})
    assert r.status == 302
    listing = web.verge("users", "list")
    assert "carl" in listing and "eve" not in listing


# --------------------------------------------------------------------------- the login throttle
def _spray(web, name: str, n: int = 30) -> list[int]:
    clients = [web.client() for _ in range(n)]
    tokens = [c.csrf() for c in clients]
    barrier = threading.Barrier(n)
    codes: list[int] = [0] * n

    def attempt(i):
        barrier.wait()
        codes[i] = clients[i].request("POST", "/login", form={
            "name": name, "password": f"wrong guess {i}", "csrf_token": tokens[i]}).status

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return codes


def _parallel_wrong_passwords_let_at_most_five_through(web):
    web.add_user("ann")
    web.start()
    codes = _spray(web, "ann")
    assert sorted(set(codes)) == [401, 429], codes
    assert codes.count(401) <= 5, codes          # password compared at most 5 times
    assert codes.count(401) >= 1                  # and the throttle is not a blanket refusal
    # the owner, signing in from another address while the name is sprayed, gets in
    owner = web.client("127.0.0.2")
    assert owner.login("ann").status == 302
    assert owner.get("/review").status == 200
    # the sprayer's address stays refused, even with the right password
    assert web.client().login("ann").status == 429


def test_30_parallel_wrong_passwords_let_at_most_5_through_on_sqlite(live):
    _parallel_wrong_passwords_let_at_most_five_through(live())


def test_30_parallel_wrong_passwords_let_at_most_5_through_on_postgres(live, pg_url):
    _parallel_wrong_passwords_let_at_most_five_through(live(VERGE_DATABASE_URL=pg_url))


def test_behind_a_trusted_proxy_each_client_has_its_own_allowance(web_settings, seed):
    seed.user("ann")

    def attempts(app, forwarded_for: str, password: str) -> int:
        c = app.test_client()
        token = csrf_token(c)
        return c.post("/login", data={"name": "ann", "password": password, "csrf_token": token},
                      headers={"X-Forwarded-For": forwarded_for}).status_code

    behind = make_app(web_settings, trusted_proxies=1)
    assert [attempts(behind, "198.51.100.7", "wrong") for _ in range(6)][-1] == 429
    assert attempts(behind, "198.51.100.8", PASSWORD) == 302   # another client behind the proxy
    # not trusted (the default): the header is ignored, every client is the proxy's address
    plain = make_app(web_settings)
    assert [attempts(plain, f"198.51.100.{i}", "wrong") for i in range(6)][-1] == 429
    assert attempts(plain, "198.51.100.99", PASSWORD) == 429


# --------------------------------------------------------------------------- exports
FORMULAS = ["=HYPERLINK(\"http://evil.example\",\"x\").jpg", "@SUM(1+1).jpg", "+1+2.jpg",
            "-3+4.jpg", "\tTAB.jpg", "\rCR.jpg"]


def _formula_cells(rows: list[dict]) -> dict:
    return {r["source_name"]: r for r in rows}


def test_a_csv_export_of_formula_names_opens_as_text(as_user, seed, web_settings):
    for i, name in enumerate(FORMULAS):
        seed.image(name=name, batch="=cmd|' /C calc'!A0")
    admin = as_user("ada", "admin")
    web_csv = admin.get("/admin/export?format=csv").get_data(as_text=True)
    env = {**TINY, "VERGE_DATA_DIR": str(web_settings.data_dir)}
    out = web_settings.data_dir / "export.csv"
    verge(env, "export", "--format", "csv", "-o", str(out))
    cli_csv = out.read_bytes().decode("utf-8")
    for text in (web_csv, cli_csv):
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        assert len(rows) == len(FORMULAS)
        names = {r["source_name"] for r in rows}
        assert names == {"'" + n for n in FORMULAS}
        for r in rows:  # no cell a spreadsheet would evaluate
            for value in r.values():
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (r, value)
            assert r["batches"] == "'=cmd|' /C calc'!A0"
    # JSON lines stay raw
    jsonl = admin.get("/admin/export?format=jsonl").get_data(as_text=True)
    assert {json.loads(line)["source_name"] for line in jsonl.splitlines()} == set(FORMULAS)


# --------------------------------------------------------------------------- thumbnails
def _png(size, mode="1") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def test_the_thumbnail_bomb_is_refused_at_the_default_limit(as_user, seed):
    """150 megapixels: over VERGE_MAX_IMAGE_PIXELS (100 M) but under PIL's own 2x guard."""
    bomb = seed.image(data=_png((12_500, 12_000)), name="bomb.png")
    ok = seed.image(data=_png((64, 48), "RGB"), name="fine.png")
    ann = as_user("ann")
    refused = ann.get(f"/images/{bomb}/thumb")
    assert refused.status_code == 200 and refused.mimetype == "image/svg+xml"  # the placeholder
    assert ann.get(f"/images/{ok}/thumb").mimetype == "image/jpeg"


def test_thumbnails_apply_the_pixel_limit_exactly(web_settings, seed):
    at, over = seed.image(data=_png((100, 100), "RGB")), seed.image(data=_png((101, 100), "RGB"))
    app = make_app(web_settings, max_image_pixels=10_000)
    seed.user("ann")
    ann = login(app, "ann")
    assert ann.get(f"/images/{at}/thumb").mimetype == "image/jpeg"
    assert ann.get(f"/images/{over}/thumb").mimetype == "image/svg+xml"


# --------------------------------------------------------------------------- labels need a claim
def test_labeling_an_unclaimed_task_through_the_api_is_refused(client, seed):
    from store import users
    from webui.security import new_token

    seed.user("ann")
    seed.user("ada", "admin")
    auth = {}
    for name in ("ann", "ada"):
        token, digest = new_token()
        with session_scope(seed.url) as s:
            users.set_token_hash(s, seed.users[name], digest)
        auth[name] = {"Authorization": f"Bearer {token}"}
    _, first = seed.routed(0.9)
    _, second = seed.routed(0.5)
    r = client.post("/api/v1/labels", headers=auth["ann"], json={"task_id": second, "class": "road"})
    assert r.status_code == 409 and "never claimed by you" in r.json["error"]
    assert client.post("/api/v1/tasks/next", headers=auth["ann"]).json["task"]["task_id"] == first
    r = client.post("/api/v1/labels", headers=auth["ann"], json={"task_id": second, "class": "road"})
    assert r.status_code == 409  # claiming one task entitles to that one only
    r = client.post("/api/v1/labels", headers=auth["ann"], json={"task_id": first, "class": "road"})
    assert r.status_code == 201 and r.json["label"]["admin_override"] is False
    r = client.post("/api/v1/labels", headers=auth["ada"], json={"task_id": second, "class": "field"})
    assert r.status_code == 201 and r.json["label"]["admin_override"] is True
    assert r.json["label"]["closed"] is True
