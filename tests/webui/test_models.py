"""The admin's model pages: the list with headline numbers, one version's curves (SVG), its
held-out confusion matrix and comparison with the head active when it was trained, and the
activate / roll back buttons. The versions come from the real retraining job on synthetic
embeddings (three clean clusters in the tiny encoder's 64-d space)."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from store.blobs import sha256_hex
from store.db import session_scope
from store.embeddings import save_embeddings
from store.images import get_or_create_batch, register_images
from store.labels import replace_source_labels
from store.model_versions import activate_model, active_model
from store.schema import Label, ModelVersion

from .conftest import login, make_app

KEY = "verge-tiny/random-seed0"
CLASSES = ("field", "road", "road_and_field")


@pytest.fixture
def loop_settings(web_settings):
    """Web settings whose encoder is the tiny one the synthetic embeddings claim to come from."""
    return dataclasses.replace(web_settings, encoder="verge-tiny", pretrained="none")


@pytest.fixture
def trained(loop_settings, seed):
    """An active binary head (v1, from a training folder), then `retrain` twice: v2 beats it and
    is promoted, v3 (nothing new) is kept as a candidate with the reason."""
    from models.heads import save_head
    from models.training import RETRAIN_RECIPE, Recipe, train_binary
    from workers.retrain import retrain

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 64))
    y = np.repeat(np.arange(3), 25)
    X = centers[y] + rng.normal(scale=0.35, size=(len(y), 64))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    rev = seed.user("rev")
    url = loop_settings.resolved_database_url
    with session_scope(url) as s:
        bid = get_or_create_batch(s, "loop", "cli")
        ids = register_images(s, bid, [(f"img-{i}.jpg", sha256_hex(str(i).encode()), 100)
                                         for i in range(len(y))], queue=False).image_ids
        save_embeddings(s, KEY, {iid: X[i] for i, iid in enumerate(ids)})
        replace_source_labels(s, "training:/photos", {iid: CLASSES[y[i]] for i, iid in enumerate(ids)
                                                         if y[i] < 2})
        s.add_all([Label(image_id=iid, user_id=rev, source="review", cls="road_and_field")
                   for i, iid in enumerate(ids) if y[i] == 2])
        binary = train_binary(X[y < 2], (y[y < 2] == 1).astype(np.float32), KEY,
                              Recipe(epochs=3, batch_size=8)).head
        path = save_head(binary, loop_settings.model_dir / "binary.pt")
        mv = ModelVersion(kind="binary", classes=["field", "road"], encoder=KEY, path=str(path),
                          metrics=binary.meta.metrics)
        s.add(mv)
        s.flush()
        activate_model(s, mv.id)
        binary_id = mv.id
    quick = dataclasses.replace(RETRAIN_RECIPE, epochs=8, patience=3, lr_halve_every=3)
    first = retrain(loop_settings, recipe=quick, find_suspects=False)
    second = retrain(loop_settings, recipe=quick, find_suspects=False)
    assert first.promoted and not second.promoted
    return {"binary": binary_id, "promoted": first.version_id, "candidate": second.version_id,
            "ids": ids}


@pytest.fixture
def admin(loop_settings, seed):
    seed.user("ada", "admin")
    return login(make_app(loop_settings), "ada")


def test_the_list_shows_headline_numbers_not_every_metric(admin, trained):
    html = admin.get("/admin/models").get_data(as_text=True)
    for vid in (trained["binary"], trained["promoted"], trained["candidate"]):
        assert f'href="/admin/models/{vid}"' in html
    rows = html.split("<tbody>")[1].split("</tbody>")[0]
    assert rows.count("<tr>") == 3
    assert "held-out accuracy" in rows and "held-out macro-F1" in rows and "held-out ECE" in rows
    assert "train accuracy" in rows  # the binary head has no held-out labels
    # no dump of curves or recipes
    assert "curves" not in html and "'epoch'" not in html and "lr_halve_every" not in html
    assert html.count('class="state st-active"') == 1 and "st-candidate" in html and "st-retired" in html


def test_a_version_page_draws_curves_confusion_and_the_comparison(admin, trained, loop_settings):
    with session_scope(loop_settings.resolved_database_url) as s:
        cand = s.get(ModelVersion, trained["candidate"])
        metrics, note = cand.metrics, cand.note
    html = admin.get(f"/admin/models/{trained['candidate']}").get_data(as_text=True)
    # per-epoch curves as inline SVG line charts: loss, accuracy/macro-F1 (validation present)
    svgs = re.findall(r'<svg class="chart lines".*?</svg>', html, re.S)
    assert len(svgs) >= 2
    epochs = len(metrics["curves"])
    loss_svg = next(svg for svg in svgs if "train loss" in svg)
    assert "validation log-loss" in loss_svg
    assert loss_svg.count('class="dot s-train"') == epochs and loss_svg.count("<polyline") == 2
    assert any("validation macro-F1" in svg and "train accuracy" in svg for svg in svgs)
    assert f"best epoch {metrics['best_epoch']} (kept)" in html
    # the held-out confusion matrix, as a table whose cells add up to the held-out count
    held = metrics["held_out"]
    table = html.split('<table class="table confusion">')[1].split("</table>")[0]
    cells = [int(n) for n in re.findall(r'<td class="num(?: diag)?">(\d+)</td>', table)]
    assert len(cells) == 9 and sum(cells) == held["n"] == sum(map(sum, held["confusion"]))
    # candidate against the head that was active, on the same labels, and the decision
    assert f"v{trained['promoted']}</a> (active then, same labels)" in html
    assert f"{held['macro_f1']:.3f}" in html
    assert f"{metrics['active_held_out']['macro_f1']:.3f}" in html
    assert "does not beat" in note and note.replace("'", "&#39;") in html
    assert "Activate v" in html
    # the curves never end up as text
    assert "&#39;epoch&#39;" not in html and "'loss'" not in html
    # a binary head from a training folder: train curves only, no held-out section
    html = admin.get(f"/admin/models/{trained['binary']}").get_data(as_text=True)
    assert "train loss" in html and "Held-out evaluation" not in html
    assert admin.get("/admin/models/999").status_code == 404


def test_activate_and_roll_back_enqueue_rescoring(admin, trained, loop_settings):
    url = loop_settings.resolved_database_url
    queue_dir = loop_settings.broker_dir / "queue"

    def messages():
        return sorted(p.name for p in queue_dir.glob("*.msg")) if queue_dir.exists() else []

    before = len(messages())
    r = admin.post(f"/admin/models/{trained['candidate']}/activate")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/admin/models/{trained['candidate']}")
    page = admin.get(r.headers["Location"]).get_data(as_text=True)
    assert f"Version {trained['candidate']} (three_class) is the active head" in page
    assert "being re-scored" in page
    with session_scope(url) as s:
        assert active_model(s).id == trained["candidate"]
        assert s.get(ModelVersion, trained["promoted"]).state == "retired"
    assert len(messages()) == before + 1  # a rescore_open task went to the broker
    # activating the active one again changes nothing
    r = admin.post(f"/admin/models/{trained['candidate']}/activate")
    assert "already the active head" in admin.get(r.headers["Location"]).get_data(as_text=True)
    assert len(messages()) == before + 1

    r = admin.post("/admin/models/rollback")
    assert r.headers["Location"].endswith(f"/admin/models/{trained['promoted']}")
    page = admin.get(r.headers["Location"]).get_data(as_text=True)
    assert f"Rolled back from version {trained['candidate']} to version {trained['promoted']}" in page
    with session_scope(url) as s:
        assert active_model(s).id == trained["promoted"]
    assert len(messages()) == before + 2
    assert admin.post("/admin/models/999/activate").status_code == 404


def test_rollback_with_nothing_to_go_back_to_says_so(admin, seed, loop_settings):
    seed.model(state="active")
    r = admin.post("/admin/models/rollback")
    page = admin.get(r.headers["Location"]).get_data(as_text=True)
    assert "Nothing rolled back" in page and "nothing to roll back to" in page


def test_a_broker_that_is_down_is_a_message_not_an_error(loop_settings, seed, trained):
    seed.user("ada", "admin")
    ada = login(make_app(loop_settings, broker_url="redis://127.0.0.1:1/0"), "ada")
    r = ada.post(f"/admin/models/{trained['candidate']}/activate")
    assert r.status_code == 302
    page = ada.get(r.headers["Location"]).get_data(as_text=True)
    assert "is the active head" in page
    assert "Open review tasks were not re-scored" in page and "cannot reach the broker" in page
    with session_scope(loop_settings.resolved_database_url) as s:
        assert active_model(s).id == trained["candidate"]  # the switch itself happened


def test_model_actions_need_an_admin_and_a_csrf_token(as_user, seed, loop_settings):
    vid = seed.model(state="candidate")
    rev = as_user("rob")
    assert rev.get(f"/admin/models/{vid}").status_code == 403
    assert rev.post(f"/admin/models/{vid}/activate").status_code == 403
    assert rev.post("/admin/models/rollback").status_code == 403
    ada = as_user("ada", "admin")
    r = ada.client.post(f"/admin/models/{vid}/activate")  # no token
    assert r.status_code == 400 and "security token" in r.get_data(as_text=True)
    with session_scope(seed.url) as s:
        assert s.get(ModelVersion, vid).state == "candidate"


_ADMIN_IN_A_FRESH_PROCESS = """
import json, re, sys
from verge.settings import Settings
from webui import create_app

app = create_app(Settings.from_env(), TESTING=True, LOGIN_FAIL_DELAY_S=0)
c = app.test_client()

def token(path):
    html = c.get(path).get_data(as_text=True)
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)

r = c.post("/login", data={"name": "ada", "password": PASSWORD, "csrf_token": token("/login")})
assert r.status_code == 302, r.status_code
h = {"X-CSRFToken": token("/review")}
out = {}
for step, path in (("activate", "/admin/models/%d/activate" % CANDIDATE), ("rollback", "/admin/models/rollback")):
    r = c.post(path, headers=h)
    out[step] = [r.status_code, r.headers.get("Location", "")]
out["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "open_clip", "torchvision"))
print(json.dumps(out))
"""


def test_activating_and_rolling_back_from_the_admin_page_never_loads_torch(seed, loop_settings):
    """The admin page flips database rows: a web process (a fresh interpreter here, since this
    one has torch loaded by other tests) activates a version and rolls back without importing
    torch or open_clip (store/model_versions.py, workers/activation.py)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from .conftest import PASSWORD

    seed.user("ada", "admin")
    first, candidate = seed.model(state="candidate"), seed.model(state="candidate")
    with session_scope(loop_settings.resolved_database_url) as s:
        activate_model(s, first)  # activated (not just marked active): a rollback returns to it
    root = Path(__file__).resolve().parents[2]
    script = (f"PASSWORD = {PASSWORD!r}\nCANDIDATE = {candidate}\n" + _ADMIN_IN_A_FRESH_PROCESS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["activate"][0] == 302 and out["activate"][1].endswith(f"/admin/models/{candidate}")
    assert out["rollback"][0] == 302 and out["rollback"][1].endswith(f"/admin/models/{first}")
    assert out["loaded"] == []
    with session_scope(loop_settings.resolved_database_url) as s:
        assert active_model(s).id == first
        assert s.get(ModelVersion, candidate).state == "rolled_back"


def test_line_chart_svg_skips_gaps_escapes_and_scales():
    from webui.charts import lines

    svg = str(lines([("a<b>", "s-train", [(1, 0.5), (2, None), (3, float("nan")), (4, 2.0)]),
                     ("val", "s-val", [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)])],
                    "loss", mark_x=2, mark_label="best <2>"))
    assert svg.startswith('<svg class="chart lines"') and svg.count("<polyline") == 2
    assert svg.count('class="dot s-train"') == 2 and svg.count('class="dot s-val"') == 4
    assert "a&lt;b&gt;" in svg and "<b>" not in svg and "best &lt;2&gt;" in svg
    assert str(lines([], "empty")).endswith("</svg>")
    fixed = str(lines([("acc", "s-train", [(1, 0.0), (2, 1.0)])], "score", ymin=0.0, ymax=1.0))
    assert ">1</text>" in fixed and ">0</text>" in fixed
