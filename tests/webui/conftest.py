"""Fixtures for the web UI: an app on a temporary, migrated SQLite database (or a throwaway
Postgres one), users, and seeded images with predictions and review tasks."""
from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass, field

import pytest

from tests import services
from tests.conftest import PG_ADMIN, need, need_postgres, port_open  # noqa: F401  (tests import them)

PASSWORD = "correct horse battery"


def jpeg(color=(90, 140, 60), size=(64, 48)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png(color=(200, 30, 30), size=(40, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def _hashed(password: str) -> str:
    """Real password hashes, computed once per password (each costs tens of milliseconds)."""
    from webui.security import hash_password

    return hash_password(password)


@dataclass
class Seeder:
    """Inserts rows the way the workers would have left them."""
    settings: object
    n: int = 0
    users: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.settings.resolved_database_url

    def user(self, name: str, role: str = "reviewer", password: str = PASSWORD) -> int:
        from store import users
        from store.db import session_scope

        with session_scope(self.url) as s:
            uid = users.create_user(s, name, _hashed(password), role).id
        self.users[name] = uid
        return uid

    def image(self, data: bytes | None = None, name: str | None = None, batch: str = "seed",
              status: str = "scored") -> int:
        from store.blobs import BlobStore
        from store.db import session_scope
        from store.images import get_or_create_batch, register_images
        from store.schema import Image

        self.n += 1
        data = data or jpeg(((self.n * 37) % 256, (self.n * 91) % 256, (self.n * 53) % 256))
        key = BlobStore(self.settings.resolved_blob_dir).put(data)
        with session_scope(self.url) as s:
            bid = get_or_create_batch(s, batch, "cli")
            reg = register_images(s, bid, [(name or f"photo-{self.n}.jpg", key, len(data))])
            iid = reg.image_ids[0]
            s.get(Image, iid).status = status
        return iid

    def predict(self, image_id: int, p_road: float | None, zs_p_road: float, reasons: str = "",
                model_version_id: int | None = None) -> int:
        from store.db import session_scope
        from store.predictions import point_to_latest
        from store.schema import Prediction

        def cls(p):
            return "road" if p >= 0.5 else "field"

        with session_scope(self.url) as s:
            pred = Prediction(
                image_id=image_id, model_version_id=model_version_id, encoder="verge-tiny:none",
                head_probs=None if p_road is None else {"field": 1 - p_road, "road": p_road},
                p_road=p_road, zs_probs={"field": 1 - zs_p_road, "road": zs_p_road},
                zs_p_road=zs_p_road, predicted_class=cls(p_road if p_road is not None else zs_p_road),
                zs_class=cls(zs_p_road), routed=bool(reasons), reasons=reasons)
            s.add(pred)
            s.flush()
            point_to_latest(s, [pred])  # as record_predictions does in the worker's transaction
            return pred.id

    def task(self, image_id: int, priority: float, reasons: str = "near_threshold",
             prediction_id: int | None = None) -> int:
        from store.db import session_scope
        from store.schema import ReviewTask

        with session_scope(self.url) as s:
            t = ReviewTask(image_id=image_id, prediction_id=prediction_id, state="open",
                           reasons=reasons, priority=priority)
            s.add(t)
            s.flush()
            return t.id

    def model(self, kind: str = "binary", state: str = "active") -> int:
        from store.db import session_scope
        from store.schema import ModelVersion

        with session_scope(self.url) as s:
            mv = ModelVersion(kind=kind, classes=["field", "road"], encoder="verge-tiny:none",
                              path="/nowhere.pt", metrics={"train_accuracy": 0.9}, state=state)
            s.add(mv)
            s.flush()
            return mv.id

    def routed(self, priority: float, p_road: float = 0.5, zs_p_road: float = 0.3,
               reasons: str = "near_threshold", **image_kw) -> tuple[int, int]:
        """An image scored and routed to review: (image_id, task_id)."""
        iid = self.image(**image_kw)
        pid = self.predict(iid, p_road, zs_p_road, reasons)
        return iid, self.task(iid, priority, reasons, pid)


def _settings_for(data_dir, **env):
    from verge.settings import Settings

    return Settings.from_env({"VERGE_DATA_DIR": str(data_dir), **env})


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory):
    """One SQLite file migrated to head (by the real migrations), copied for each test."""
    import migrations
    from store.db import dispose_engines

    path = tmp_path_factory.mktemp("template") / "verge.db"
    migrations.upgrade(f"sqlite:///{path}")
    dispose_engines()  # closing the last connection folds the WAL into the file
    return path


@pytest.fixture
def web_settings(tmp_path, monkeypatch, migrated_sqlite):
    """Embedded settings under tmp: SQLite, blobs, and the filesystem broker (no server)."""
    import shutil

    from store.db import dispose_engines

    data = tmp_path / "var"
    monkeypatch.setenv("VERGE_DATA_DIR", str(data))
    monkeypatch.delenv("VERGE_BROKER_URL", raising=False)
    monkeypatch.delenv("VERGE_DATABASE_URL", raising=False)
    settings = _settings_for(data)
    data.mkdir(parents=True)
    shutil.copyfile(migrated_sqlite, data / "verge.db")
    _reset_celery()
    yield settings
    _reset_celery()
    dispose_engines()


def _reset_celery():
    """The Celery app is one per process, and kombu keeps producer pools per broker URL in
    process-wide registries: the filesystem broker's URL is the same in every test while its
    folder is not, so drop the pools between tests."""
    import sys

    if "workers.app" in sys.modules:
        from kombu import pools

        sys.modules["workers.app"].app.close()
        sys.modules["workers.app"].app._after_fork()
        pools.reset()


@pytest.fixture
def pg_settings(tmp_path, monkeypatch):
    """Settings on a throwaway, migrated Postgres database (created here, dropped afterwards)."""
    need_postgres()
    with services.ThrowawayDatabase(PG_ADMIN, "verge_webui", migrate=True) as db:
        data = tmp_path / "var"
        monkeypatch.setenv("VERGE_DATA_DIR", str(data))
        yield _settings_for(data, VERGE_DATABASE_URL=db.url)


def make_app(settings, **overrides):
    from webui import create_app

    return create_app(settings, TESTING=True, LOGIN_FAIL_DELAY_S=0, **overrides)


@pytest.fixture
def app(web_settings):
    return make_app(web_settings)


@pytest.fixture
def seed(web_settings) -> Seeder:
    return Seeder(web_settings)


@pytest.fixture
def client(app):
    return app.test_client()


def csrf_token(client, path: str = "/login") -> str:
    html = client.get(path).get_data(as_text=True)
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


class Browser:
    """A signed-in test client that sends the page's CSRF token the way review.js does."""

    def __init__(self, client, token: str):
        self.client = client
        self.token = token

    def post(self, path: str, json=None, **kw):
        headers = {"X-CSRFToken": self.token, **kw.pop("headers", {})}
        if json is not None:
            return self.client.post(path, json=json, headers=headers, **kw)
        return self.client.post(path, headers=headers, **kw)

    def get(self, path: str, **kw):
        return self.client.get(path, **kw)


def login(app_or_client, name: str, password: str = PASSWORD) -> Browser:
    client = app_or_client.test_client() if hasattr(app_or_client, "test_client") else app_or_client
    token = csrf_token(client)
    resp = client.post("/login", data={"name": name, "password": password, "csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return Browser(client, csrf_token(client, "/review"))


@pytest.fixture
def as_user(app, seed):
    """``as_user(name, role)``: a signed-in Browser for a new user."""
    def make(name: str, role: str = "reviewer") -> Browser:
        seed.user(name, role)
        return login(app, name)
    return make
