"""Malformed input on every route: never a 500.

The walk is automatic: every rule in Flask's URL map, every method it answers, as anonymous, a
reviewer and an admin (with the page's CSRF token, and the API's bearer token on /api/v1),
with a corpus of malformed values in each path parameter, in each query parameter any route
reads, and in JSON and form bodies -- huge, negative, float, infinite and non-ASCII numbers,
empty and very long strings, NUL, JSON nested 50,000 deep. A new route is covered without
anyone adding it here. (A 500 raises out of the test client: the app runs with TESTING=True.)

Then the endpoints the probe found answering 500 get the exact 400 (or 404 for a path) they owe.
"""
from __future__ import annotations

import re
import urllib.parse

import pytest

from store.db import session_scope

from .conftest import login

pytestmark = pytest.mark.slow

# "1" last: a valid id can end the fuzzing identity's own session (sign out everywhere, role)
PATH_VALUES = ["-1", "99999999999999999999999", "2147483648", "2.9", "1e400", "NaN",
               "\u0662", "\u00b2", "x" * 3000, "\x00", "%", "1"]
QUERY_KEYS = ["after", "before", "batch", "limit", "user", "format", "model", "min", "max",
              "status", "class", "routed", "labeled", "reason", "next", "endpoint", "_external",
              "_anchor", "_scheme", "_method"]
QUERY_VALUES = ["99999999999999999999999", "2147483648", "-1", "2.9", "1e400", "inf", "nan", "\u0662",
                "\u00b2", "", "x" * 5000, "\x00", "1"]
NASTY = ["99999999999999999999999"]
JSON_FIELDS = ["task_id", "label_id", "exclude", "task_ids", "class", "time_on_item_ms"]
JSON_VALUES = ["99999999999999999999999", "2.9", "1e400", '"\u0662"', "true",
               '["\u0662", 2.5]', "[" + ",".join(["1"] * 500) + "]", '{"a": 1}',
               '"' + "x" * 10000 + '"', '"\\u0000"']
STRUCTURAL = ["", "{}", "[]", "null", '"x"', "{", "[" * 50_000 + "]" * 50_000,
              '{"a":' * 5_000 + "1" + "}" * 5_000, '{"task_id": 1, "class": "road"' + " " * 2_000_000 + "}"]
FORM_FIELDS = ["task_id", "label_id", "task_ids", "exclude", "class", "role", "name", "password",
               "batch", "next", "format"]
FORM_VALUES = ["99999999999999999999999", "-1", "2.9", "\u0662", "", "x" * 5000, "\x00", "1"]


def _paths(rule, values=PATH_VALUES) -> list[str]:
    """The rule's URL with each path parameter set to every value of the corpus."""
    if not rule.arguments:
        return [rule.rule]
    return [re.sub(r"<[^>]+>", urllib.parse.quote(v, safe=""), rule.rule) for v in values]


def _json_bodies() -> list[str]:
    base = {"task_id": "1", "class": '"road"', "label_id": "1", "task_ids": "[1]", "exclude": "[1]"}
    out = list(STRUCTURAL)
    for name in JSON_FIELDS:
        for value in JSON_VALUES:
            fields = {**base, name: value}
            out.append("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}")
    return out


class Identity:
    def __init__(self, app, name: str | None, token: str | None):
        self.app, self.name, self.token = app, name, token
        self.browser = None
        self.relogin()

    def relogin(self):
        if self.name is None:
            self.client, self.csrf = self.app.test_client(), ""
            return
        self.browser = login(self.app, self.name)
        self.client, self.csrf = self.browser.client, self.browser.token

    def signed_in(self) -> bool:
        return self.name is None or self.client.get("/review").status_code == 200

    def headers(self, path: str) -> dict:
        h = {"X-CSRFToken": self.csrf} if self.csrf else {}
        if path.startswith("/api/") and self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h


def _requests(rule, method: str, full: bool):
    """(path, kwargs) pairs for one rule and method; ``full``: the whole corpus (for the admin,
    who reaches every handler), else paths, the query corpus in all keys at once, and bodies."""
    if method in ("HEAD", "OPTIONS"):  # answered as GET is (HEAD) or by Flask itself (OPTIONS)
        for path in _paths(rule, PATH_VALUES[2:4] + PATH_VALUES[-1:]):
            yield path, {}
        return
    for path in _paths(rule):
        yield path, {}
    base = _paths(rule)[-1]  # path parameters valid ("1"): reach the handler's own parsing
    if method == "GET":
        for value in QUERY_VALUES:
            yield base + "?" + urllib.parse.urlencode({k: value for k in QUERY_KEYS}), {}
        if full:
            for key in QUERY_KEYS:
                for value in NASTY:
                    yield base + "?" + urllib.parse.urlencode({key: value}), {}
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        for body in _json_bodies() if full else STRUCTURAL:
            yield base, {"data": body.encode("utf-8", "surrogatepass"),
                         "content_type": "application/json"}
        for value in FORM_VALUES:
            yield base, {"data": {k: value for k in FORM_FIELDS}}


def test_no_route_answers_500_to_malformed_input(web_settings, seed):
    import time

    from store import users
    from webui.security import new_token

    from .conftest import make_app

    # the fuzzing itself posts to /login thousands of times: not what the throttle is for
    app = make_app(web_settings, LOGIN_ATTEMPTS_PER_NAME=10**9, LOGIN_ATTEMPTS_PER_ADDRESS=10**9)
    began = time.monotonic()
    # user 1 is a bystander: the account routes (password, disable, role) fuzzed with id "1"
    # change zed, never the identities doing the fuzzing
    assert seed.user("zed") == 1
    seed.user("ada", "admin")
    seed.user("rob")
    with session_scope(seed.url) as s:
        tokens = {}
        for name in ("ada", "rob"):
            token, digest = new_token()
            users.set_token_hash(s, seed.users[name], digest)
            tokens[name] = token
    seed.routed(0.9)
    seed.model()
    identities = [Identity(app, None, None), Identity(app, "rob", tokens["rob"]),
                  Identity(app, "ada", tokens["ada"])]
    rules = sorted(app.url_map.iter_rules(), key=lambda r: (r.endpoint == "auth.logout", r.rule))
    failures, sent, statuses = [], 0, set()
    for who in identities:
        for rule in rules:
            for method in sorted(rule.methods):
                for path, kw in _requests(rule, method, full=who.name == "ada"):
                    sent += 1
                    try:
                        resp = who.client.open(path, method=method, headers=who.headers(path), **kw)
                    except Exception as exc:  # TESTING: an unhandled error surfaces here
                        failures.append((who.name, method, path[:120], repr(exc)[:200]))
                        continue
                    statuses.add(resp.status_code)
                    if resp.status_code >= 500:
                        failures.append((who.name, method, path[:120], resp.status_code))
                    resp.close()
            if not who.signed_in():
                who.relogin()
    assert not failures, f"{len(failures)} of {sent} requests failed:\n" + \
        "\n".join(map(str, failures[:40]))
    print(f"{sent} requests in {time.monotonic() - began:.1f} s; statuses {sorted(statuses)}")
    assert sent > 3000 and {200, 302, 400, 404}.issubset(statuses), (sent, statuses)


# the endpoints the probe found answering 500, with what they owe instead
QUERY_400 = ["/browse?batch={v}", "/browse?after={v}", "/batches?before={v}",
             "/admin/export?batch={v}", "/api/v1/labels?after={v}", "/api/v1/labels?batch={v}",
             "/api/v1/labels?limit={v}"]
PATH_404 = ["/images/{v}", "/images/{v}/thumb", "/browse/{v}", "/batches/{v}", "/admin/models/{v}",
            "/api/v1/images/{v}", "/api/v1/batches/{v}"]
BAD_NUMBERS = ["99999999999999999999999", "9223372036854775808", "2147483648", "2.9", "1e400",
               "Infinity",
               "\u0662", "\u00b2", "-"]


@pytest.fixture(params=["sqlite", "postgres"])
def db_settings(request):
    """SQLite (64-bit integers) and Postgres (32-bit ``integer`` ids: the stricter range)."""
    return request.getfixturevalue("web_settings" if request.param == "sqlite" else "pg_settings")


def test_the_probes_findings_are_a_400_with_a_reason(db_settings):
    from store import users
    from webui.security import new_token

    from .conftest import Seeder, make_app

    app, seed = make_app(db_settings), Seeder(db_settings)
    seed.user("ada", "admin")
    ada = login(app, "ada")
    token, digest = new_token()
    with session_scope(seed.url) as s:
        users.set_token_hash(s, seed.users["ada"], digest)
    api = {"Authorization": f"Bearer {token}"}
    _, tid = seed.routed(0.9)
    for value in BAD_NUMBERS:
        q = urllib.parse.quote(value, safe="")
        for template in QUERY_400:
            path = template.format(v=q)
            r = ada.get(path, headers=api if path.startswith("/api/") else {})
            if "export?batch" in path:  # a batch is named or numbered: an unknown one is a 404
                assert r.status_code == 404, (path, r.status_code)
                continue
            assert r.status_code == 400, (path, r.status_code)
            assert "must be a whole number" in r.get_data(as_text=True), path
        for template in PATH_404:
            path = template.format(v=q)
            r = ada.get(path, headers=api if path.startswith("/api/") else {})
            assert r.status_code == 404, (path, r.status_code)
        for path, body in [("/review/api/label", {"task_id": value, "class": "road"}),
                           ("/review/api/skip", {"task_id": value}),
                           ("/review/api/undo", {"label_id": value}),
                           ("/review/api/renew", {"task_ids": [value]}),
                           ("/review/api/claim", {"exclude": [value]})]:
            r = ada.post(path, json=body)
            assert r.status_code == 400 and "whole number" in r.json["error"], (path, value, r.json)
        r = ada.client.post("/api/v1/tasks/next", json={"exclude": [value]}, headers=api)
        assert r.status_code == 400 and "whole number" in r.json["error"]
    # JSON numbers that are not whole: 2.9 is not task 2; 1e400 and Infinity are not numbers here
    for raw in ("2.9", "1e400", "Infinity", "NaN", "true", "9007199254740994.0", "2147483648"):
        r = ada.post("/review/api/label", data='{"task_id": %s, "class": "road"}' % raw,
                     content_type="application/json", headers={"X-CSRFToken": ada.token})
        assert r.status_code == 400, (raw, r.status_code)
    deep = "[" * 50_000 + "]" * 50_000
    for path in ("/review/api/label", "/api/v1/labels"):
        r = ada.client.post(path, data=deep, content_type="application/json",
                            headers={"X-CSRFToken": ada.token, **api})
        assert r.status_code == 400 and "nested at most" in r.json["error"], (path, r.json)
    # query-string keys never reach url_for: the page's own links stay on this site
    html = ada.get("/browse?_external=1&_scheme=https&_anchor=x&endpoint=x&after=1&status=scored")
    assert html.status_code == 200
    page = html.get_data(as_text=True)
    assert "https://" not in page and "#x" not in page and "endpoint=" not in page
