"""The OpenAPI 3.1 contract at /api/v1/openapi.json: it names exactly the API's routes, it is a
valid document, and Schemathesis, run against a live `verge web` with a real token, finds no
server error and no response outside it."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from store.db import session_scope
from tests.conftest import TINY

from .conftest import Seeder
from .live import LiveWeb

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _token(seed, name: str) -> str:
    from store import users
    from webui.security import new_token

    token, digest = new_token()
    with session_scope(seed.url) as s:
        users.set_token_hash(s, seed.users[name], digest)
    return token


def _api_rules(app) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        out |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return out


def test_every_api_rule_is_in_the_document_and_nothing_else(app, client, seed):
    seed.user("ann")
    auth = {"Authorization": f"Bearer {_token(seed, 'ann')}"}
    assert client.get("/api/v1/openapi.json").status_code == 401  # like the rest of the API
    r = client.get("/api/v1/openapi.json", headers=auth)
    assert r.status_code == 200 and r.mimetype == "application/json"
    doc = r.json
    documented = {(path, method) for path, ops in doc["paths"].items()
                  for method in ops if method in HTTP_METHODS}
    rules = _api_rules(app)
    assert len(rules) >= 8
    assert rules - documented == set(), "routes missing from the document"
    assert documented - rules == set(), "documented operations that no route serves"
    # every path parameter of a route is declared, and every operation has the error shape
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{([^}]+)}", path)), (path, method)
            assert "401" in op["responses"], (path, method)
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "vrg_..."}
    assert doc["security"] == [{"bearer": []}]


def test_the_document_is_valid_openapi_3_1(app, client, seed):
    from jsonschema.validators import Draft202012Validator
    from openapi_spec_validator import validate

    seed.user("ann")
    doc = client.get("/api/v1/openapi.json",
                     headers={"Authorization": f"Bearer {_token(seed, 'ann')}"}).json
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # the OpenAPI 3.1 meta-schema
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)


def _seed_live(settings) -> Seeder:
    """A few routed tasks, a batch and images in the live server's database."""
    seed = Seeder(settings)
    for p in (0.9, 0.8, 0.7, 0.6):
        seed.routed(p, batch="fuzz")
    return seed


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_schemathesis_finds_no_server_error_and_no_response_outside_the_contract(
        tmp_path, request, database):
    """The embedded default (SQLite), and Postgres, whose 32-bit ids and NUL-free text are the
    stricter server."""
    from store.db import dispose_engines
    from verge.settings import Settings

    st = shutil.which("schemathesis", path=str(sys.executable).rsplit("/", 1)[0]) or \
        shutil.which("schemathesis")
    assert st, "schemathesis is a dev dependency (pip install -e '.[dev]')"
    env = {**TINY, "VERGE_DATA_DIR": str(tmp_path / "var")}
    if database == "postgres":
        env["VERGE_DATABASE_URL"] = request.getfixturevalue("pg_url")
    web = LiveWeb(env, tmp_path / "web.log")
    try:
        web.add_user("ada", "admin")
        web.add_user("rob")
        token = web.token("ada")
        seed = _seed_live(Settings.from_env(env))
        dispose_engines()
        web.start()
        report = tmp_path / "report.json"
        proc = subprocess.run(
            # every check but the ones tests/webui/schemathesis.toml explains
            [st, "--config-file", str(Path(__file__).with_name("schemathesis.toml")), "run",
             f"http://127.0.0.1:{web.port}/api/v1/openapi.json",
             "-H", f"Authorization: Bearer {token}", "--max-examples", "25", "--no-color",
             "--report", "json", "--report-json-path", str(report)],
            capture_output=True, text=True, timeout=400)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-8000:]
        result = json.loads(report.read_text())
        assert result["complete"] and result["failures"] == [] and result["errors"] == [], out[-8000:]
        ops = result["operations"]
        assert ops["tested"] == ops["selected"] == ops["total"] >= 7, ops  # every operation
        assert result["test_cases"]["generated"] >= 200, result["test_cases"]
        assert all(result["phases"][p]["status"] == "success"
                   for p in ("coverage", "fuzzing", "stateful")), result["phases"]
        log = web.log.read_text()
        assert '" 500 ' not in log and "Traceback" not in log, log[-3000:]
        assert seed.n == 4
    finally:
        web.stop()
