"""Who may do what: anonymous refusal on every route, CSRF, admin pages, cookies, paths, escaping."""
from __future__ import annotations

import os
import stat

import pytest

from .conftest import PASSWORD, csrf_token, login, make_app

PUBLIC = {"auth.login", "static", "health.healthz"}


def _url(rule) -> str:
    from werkzeug.routing import IntegerConverter

    values = {}
    for arg, conv in rule._converters.items():
        values[arg] = 1 if isinstance(conv, IntegerConverter) else "x"
    return rule.build(values)[1]


def test_every_route_but_login_static_and_healthz_refuses_anonymous_requests(app, seed):
    """From another machine. (/metrics also answers the loopback interface: test_metrics.py.)"""
    client = app.test_client()
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC:
            continue
        url = _url(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            resp = client.open(url, method=method, environ_base={"REMOTE_ADDR": "203.0.113.7"})
            checked += 1
            if rule.endpoint.startswith(("api.", "metrics.")):
                assert resp.status_code == 401, (method, url, resp.status_code)
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            elif resp.status_code == 302:
                assert "/login" in resp.headers["Location"], (method, url)
            else:
                assert resp.status_code == 401, (method, url, resp.status_code)
    assert checked >= 30


def test_public_routes_answer_anonymously(client):
    assert client.get("/login").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json["ok"] and health.json["revision"] == health.json["head"]


def test_a_post_without_a_csrf_token_is_refused(app, as_user):
    browser = as_user("ann", "admin")
    c = browser.client
    for path, data in [("/review/api/claim", None), ("/logout", {}), ("/admin/users", {"name": "x"}),
                       ("/batches/upload", {}), ("/review/api/undo", None)]:
        resp = c.post(path, json={}) if data is None else c.post(path, data=data)
        assert resp.status_code == 400, path
        assert "security token" in resp.get_data(as_text=True)
    # a wrong token is as bad as none
    assert c.post("/review/api/claim", json={}, headers={"X-CSRFToken": "forged"}).status_code == 400
    # and the login form itself is protected (no logging people in from other sites)
    fresh = app.test_client()
    assert fresh.post("/login", data={"name": "ann", "password": PASSWORD}).status_code == 400
    # with the token all is well
    assert browser.post("/review/api/claim", json={}).status_code == 200


@pytest.mark.parametrize("path", [
    "/images/../../etc/passwd", "/images/%2e%2e/%2e%2e/etc/passwd", "/images/..%2f..%2fetc%2fpasswd",
    "/images/1/../../../etc/passwd", "/images/-1", "/images/1x", "/images/99999",
    "/images/99999/thumb", "/static/../secret_key", "/static/%2e%2e/secret_key",
    "/static/..%2fsecret_key", "/api/v1/images/..%2f..%2fetc%2fpasswd",
])
def test_paths_outside_the_routes_are_404(as_user, seed, path):
    seed.image()
    browser = as_user("ann")
    resp = browser.get(path)
    assert resp.status_code == 404, (path, resp.status_code)
    body = resp.get_data(as_text=True)
    assert "root:" not in body and "secret" not in body.lower().replace("secret_key", "")


def test_admin_pages_refuse_reviewers(as_user):
    rev = as_user("rob")
    assert rev.get("/admin/users").status_code == 403
    assert rev.get("/admin/models").status_code == 403
    assert rev.post("/admin/users", data={"name": "eve", "password": "x" * 10, "role": "admin"}).status_code == 403
    assert rev.post("/batches/upload", data={}).status_code == 403
    assert "Upload a batch" not in rev.get("/batches").get_data(as_text=True)


def test_admin_adds_users_changes_roles_and_issues_tokens(as_user, seed, app):
    admin = as_user("ada", "admin")
    r = admin.post("/admin/users", data={"name": "bob", "password": "long enough pw", "role": "reviewer"})
    assert r.status_code == 302
    page = admin.get("/admin/users").get_data(as_text=True)
    assert "bob" in page
    bob_id = _user_id(seed, "bob")
    r = admin.post(f"/admin/users/{bob_id}/token")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    token = r.get_data(as_text=True).split('<pre class="mono">')[1].split("</pre>")[0]
    assert token.startswith("vrg_")
    assert app.test_client().get("/api/v1/labels", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert admin.post(f"/admin/users/{bob_id}/role", data={"role": "admin"}).status_code == 302
    assert login(app, "bob", "long enough pw").get("/admin/users").status_code == 200
    # short passwords and duplicates are refused with a message
    admin.post("/admin/users", data={"name": "carl", "password": "short", "role": "reviewer"})
    admin.post("/admin/users", data={"name": "bob", "password": "long enough pw", "role": "reviewer"})
    page = admin.get("/admin/users").get_data(as_text=True)
    assert "at least 8 characters" in page and "already exists" in page and "carl" not in page.split("<tbody>")[1]


def _user_id(seed, name):
    from store import users
    from store.db import session_scope

    with session_scope(seed.url) as s:
        return users.user_by_name(s, name).id


def test_cookies_are_httponly_lax_and_secure_under_https(web_settings, seed):
    seed.user("ann")
    for https in (False, True):
        app = make_app(web_settings, https=https)
        c = app.test_client()
        token = csrf_token(c)
        resp = c.post("/login", data={"name": "ann", "password": PASSWORD, "csrf_token": token},
                      base_url="https://localhost" if https else "http://localhost",
                      headers={"Referer": "https://localhost/login"} if https else {})
        assert resp.status_code == 302
        cookie = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith("verge_session=")][-1]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert ("Secure" in cookie) == https


def test_security_headers(client):
    resp = client.get("/login")
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"


def test_secret_key_is_created_once_with_mode_600(web_settings):
    a = make_app(web_settings)
    path = web_settings.data_dir / "secret_key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    b = make_app(web_settings)
    assert a.config["SECRET_KEY"] == b.config["SECRET_KEY"] and len(a.config["SECRET_KEY"]) >= 32
    c = make_app(web_settings, secret_key="k" * 40)
    assert c.config["SECRET_KEY"] == "k" * 40


def test_failed_logins_are_throttled(app, seed):
    seed.user("ann")
    c = app.test_client()
    token = csrf_token(c)
    for _ in range(5):
        r = c.post("/login", data={"name": "ann", "password": "wrong", "csrf_token": token})
        assert r.status_code == 401 and "Wrong name or password" in r.get_data(as_text=True)
    r = c.post("/login", data={"name": "ann", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "Too many failed sign-ins" in r.get_data(as_text=True)


def test_login_never_redirects_off_site(app, seed):
    seed.user("ann")
    for target, expected in [("//evil.example/x", "/review"), ("https://evil.example/", "/review"),
                             ("/browse?status=failed", "/browse?status=failed"), ("/\\evil", "/review")]:
        c = app.test_client()
        token = csrf_token(c)
        r = c.post("/login", data={"name": "ann", "password": PASSWORD, "csrf_token": token,
                                   "next": target})
        assert r.headers["Location"] == expected, target


def test_changing_the_password_signs_out_other_sessions(app, seed, as_user):
    browser = as_user("ann")
    assert browser.get("/review").status_code == 200
    from store import users
    from store.db import session_scope
    from webui.security import hash_password

    with session_scope(seed.url) as s:
        users.set_password_hash(s, seed.users["ann"], hash_password("a new password"))
    assert browser.get("/review").status_code == 302


def test_names_are_escaped_everywhere(as_user, seed):
    evil_batch = '<script>alert("b")</script>'
    evil_file = '<img src=x onerror=alert(1)>.jpg'
    iid = seed.image(name=evil_file, batch=evil_batch)
    pid = seed.predict(iid, 0.5, 0.4, "near_threshold")
    seed.task(iid, 0.9, "near_threshold", pid)
    browser = as_user("ann")
    from store.db import session_scope
    from store.images import find_batch

    with session_scope(seed.url) as s:
        bid = find_batch(s, evil_batch).id
    for path in ["/batches", f"/batches/{bid}", "/browse", f"/browse/{iid}", "/queue",
                 f"/browse?batch={bid}"]:
        html = browser.get(path).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;" in html or "&lt;img src=x" in html, path
    # the review payload is JSON, drawn with textContent by review.js
    task = browser.post("/review/api/claim", json={}).json["task"]
    assert task["source_name"] == evil_file and task["batches"] == [evil_batch]
