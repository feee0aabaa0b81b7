"""Exports people train on, read back by their real consumers: `datasets.load_dataset` for the
Hugging Face layout, a class-per-folder walk (what torchvision's ImageFolder does) for
imagefolder, and Label Studio's documented task format for the tasks JSON, which the import then
brings back as labels."""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import select

from store.db import session_scope
from store.label_studio import LABEL_CONFIG
from store.schema import Image, Label, ReviewTask, User
from tests.conftest import verge

from .conftest import jpeg, png

# Label Studio's task format (https://labelstud.io/guide/task_format): "data" with the fields the
# labeling config names; predictions with model_version, score and results whose from_name,
# to_name and type match a control tag of the config.
LS_TASK_SCHEMA = {
    "type": "object", "required": ["data"], "additionalProperties": False,
    "properties": {
        "data": {"type": "object", "required": ["image"], "properties": {"image": {"type": "string"}}},
        "predictions": {"type": "array", "items": {
            "type": "object", "required": ["result", "model_version"],
            "properties": {
                "model_version": {"type": "string"}, "score": {"type": "number"},
                "result": {"type": "array", "items": {
                    "type": "object", "required": ["from_name", "to_name", "type", "value"],
                    "properties": {"from_name": {"type": "string"}, "to_name": {"type": "string"},
                                   "type": {"const": "choices"}, "score": {"type": "number"},
                                   "value": {"type": "object", "required": ["choices"],
                                             "properties": {"choices": {"type": "array",
                                                                        "items": {"type": "string"}}}}}}}}}},
    },
}


def env_of(settings) -> dict:
    return {"VERGE_DATA_DIR": str(settings.data_dir)}


def _seed(seed):
    """Four images: a road labeled by a person (binary head v1), a field scored by zero-shot only,
    a PNG saved without a suffix, and a failed upload (never exported)."""
    seed.user("rev")
    mv = seed.model()
    road = seed.image(name="road one.jpg")
    seed.predict(road, 0.7, 0.6, model_version_id=mv)
    field = seed.image(name="field.jpeg")
    seed.predict(field, None, 0.2)
    nosuffix = seed.image(data=png(), name="scan-without-suffix")
    seed.predict(nosuffix, 0.9, 0.8, model_version_id=mv)
    bad = seed.image(data=b"not an image", name="broken.jpg", status="failed")
    with session_scope(seed.url) as s:
        s.add(Label(image_id=road, user_id=seed.users["rev"], source="review", cls="road_and_field"))
    return {"road": road, "field": field, "nosuffix": nosuffix, "bad": bad, "mv": mv}


def test_hf_export_loads_with_datasets_and_carries_the_metadata(seed, web_settings, tmp_path):
    datasets = pytest.importorskip("datasets")
    ids = _seed(seed)
    out = tmp_path / "hf"
    proc = verge(env_of(web_settings), "export", "--format", "hf", str(out))
    assert "wrote 3 images" in proc.stderr and "1 failed to decode" in proc.stderr, proc.stderr
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "cache"))
    train = ds["train"]
    assert train.num_rows == 3
    rows = {r["image_id"]: r for r in train}
    assert set(rows) == {ids["road"], ids["field"], ids["nosuffix"]}
    road, field = rows[ids["road"]], rows[ids["field"]]
    # the folder class is the final label: the reviewer's, not the head's
    assert road["label"] == "road_and_field" and road["label_source"] == "human"
    assert road["predicted_class"] == "road"
    assert road["model_version"] == ids["mv"] and road["model_kind"] == "binary"
    assert road["head_p_road"] == pytest.approx(0.7) and road["head_p_road_and_field"] is None
    assert road["human_labels"] == [{"reviewer": "rev", "class": "road_and_field",
                                     "at": road["human_labels"][0]["at"]}]
    assert road["source_name"] == "road one.jpg" and road["batches"] == ["seed"]
    assert field["label"] == "field" and field["model_version"] is None
    assert field["head_p_road"] is None and field["zero_shot_p_road"] == pytest.approx(0.2)
    with session_scope(seed.url) as s:
        sha = {i: s.get(Image, i).sha256 for i in rows}
    for iid, r in rows.items():
        assert r["sha256"] == sha[iid]
        assert r["image"].size[0] > 0  # decoded by the loader
    # the class folders hold what the label column says
    for path in out.rglob("*.*"):
        if path.suffix != ".parquet":
            assert rows[int(path.name.split("-")[0])]["label"] == path.parent.name
    assert rows[ids["nosuffix"]]["image"].format == "PNG"


def test_imagefolder_split_is_by_hash_stable_and_links_the_blobs(seed, web_settings, tmp_path):
    for i in range(40):
        iid = seed.image(data=jpeg((i * 6 % 256, 90, 200 - i)), name=f"p{i}.jpg")
        seed.predict(iid, None, 0.9 if i % 2 else 0.1)
    env = env_of(web_settings)
    first, second = tmp_path / "a", tmp_path / "b"
    verge(env, "export", "--format", "imagefolder", "--split", "train=0.75,val=0.25", str(first))
    verge(env, "export", "--format", "imagefolder", "--split", "train=0.75,val=0.25", "-o", str(second))

    def tree(root: Path) -> dict:
        return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}

    a, b = tree(first), tree(second)
    assert sorted(a) == sorted(b) and len(a) == 40  # the same split every time
    splits = {k.split("/")[0] for k in a}
    assert splits == {"train", "val"}
    assert {k.split("/")[1] for k in a} == {"field", "road"}
    n_val = sum(k.startswith("val/") for k in a)
    assert 3 <= n_val <= 20
    blob_dir = web_settings.resolved_blob_dir
    for rel, path in a.items():
        sha = path.name.split("-")[1].split(".")[0]
        blob = next(blob_dir.glob(f"{sha[:2]}/{sha}*"))
        assert path.read_bytes() == blob.read_bytes()
        assert os.stat(path).st_ino == os.stat(blob).st_ino  # a hard link, not a copy


@pytest.mark.parametrize("args, reason", [
    (["--split", "train=0.8,val=0.3"], "add up to 1.1"),
    (["--split", "train"], "is not NAME=FRACTION"),
    (["--split", "../x=1"], "is not NAME=FRACTION"),
    (["--embeddings"], "--embeddings goes with --format hf"),
])
def test_bad_dataset_export_requests_end_in_one_line(seed, web_settings, tmp_path, args, reason):
    out = tmp_path / "out"
    proc = verge(env_of(web_settings), "export", "--format", "imagefolder", *args, str(out), check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("verge: error: ") and reason in proc.stderr
    assert not out.exists()


def test_dataset_export_refuses_a_folder_that_is_not_empty(seed, web_settings, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    proc = verge(env_of(web_settings), "export", "--format", "hf", str(tmp_path / "busy"), check=False)
    assert proc.returncode == 1 and "is not an empty folder" in proc.stderr
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    proc = verge(env_of(web_settings), "export", "--format", "hf", check=False)
    assert proc.returncode == 1 and "writes a folder" in proc.stderr


def _annotate(tasks: list[dict], who, cls_for) -> list[dict]:
    """What Label Studio's JSON export holds after people labeled the imported tasks."""
    out = []
    for n, task in enumerate(tasks, start=1):
        done = dict(task, id=n, annotations=[{
            "id": 100 + n, "completed_by": who(n), "was_cancelled": False, "lead_time": 2.5,
            "created_at": f"2026-05-0{1 + n % 8}T10:00:00.000000Z",
            "result": [{"id": f"r{n}", "from_name": "choice", "to_name": "image", "type": "choices",
                        "origin": "manual", "value": {"choices": [cls_for(task)]}}]}])
        out.append(done)
    return out


def test_label_studio_tasks_follow_the_documented_format_and_import_round_trips(
        seed, web_settings, tmp_path):
    ids = _seed(seed)
    task_id = seed.task(ids["field"], 0.5)
    env = env_of(web_settings)
    out = tmp_path / "tasks.json"
    verge(env, "export", "--format", "label-studio", "--image-url", "http://verge.example/images/{id}",
          "-o", str(out))
    tasks = json.loads(out.read_text())
    stdout = json.loads(verge(env, "export", "--format", "label-studio",
                              "--image-url", "http://verge.example/images/{id}").stdout)
    assert stdout == tasks

    config = ET.fromstring(LABEL_CONFIG)
    choices = config.find("Choices")
    assert [c.get("value") for c in choices] == ["field", "road", "road_and_field"]
    image_tag = config.find("Image")
    assert len(tasks) == 3  # the failed image is left out
    for task in tasks:
        jsonschema.validate(task, LS_TASK_SCHEMA)
        assert image_tag.get("value") == "$image" and "image" in task["data"]
        assert task["data"]["image"] == f"http://verge.example/images/{task['data']['verge_image_id']}"
        (pred,) = task["predictions"]
        (result,) = pred["result"]
        assert result["from_name"] == choices.get("name") and result["to_name"] == choices.get("toName")
        assert result["to_name"] == image_tag.get("name")
        assert result["value"]["choices"][0] in {c.get("value") for c in choices}
    by_id = {t["data"]["verge_image_id"]: t for t in tasks}
    road = by_id[ids["road"]]["predictions"][0]
    assert road["model_version"] == f"verge-binary-v{ids['mv']}" and road["score"] == pytest.approx(0.7)
    field = by_id[ids["field"]]["predictions"][0]
    assert field["model_version"] == "verge-zero-shot" and field["score"] == pytest.approx(0.8)
    assert field["result"][0]["value"]["choices"] == ["field"]

    # people label them in Label Studio; rev exists in verge already, the others do not
    who = {ids["road"]: 1, ids["field"]: {"id": 2, "email": "kim@lab.example"}, ids["nosuffix"]: 3}
    cls = {ids["road"]: "road", ids["field"]: "road_and_field", ids["nosuffix"]: "field"}
    annotated = _annotate(tasks, lambda n: who[tasks[n - 1]["data"]["verge_image_id"]],
                          lambda t: cls[t["data"]["verge_image_id"]])
    annotated.append({"id": 99, "data": {"image": "x", "sha256": "f" * 64},
                      "annotations": [{"id": 999, "completed_by": 1, "result": [
                          {"from_name": "choice", "to_name": "image", "type": "choices",
                           "value": {"choices": ["road"]}}]}]})
    annotated[0]["annotations"].append({"id": 500, "completed_by": 1, "was_cancelled": True, "result": []})
    export_file = tmp_path / "ls-export.json"
    export_file.write_text(json.dumps(annotated))
    proc = verge(env, "import", "label-studio", str(export_file), "--user", "1=rev")
    assert "label studio user id 1 -> verge user rev\n" in proc.stdout
    assert "label studio kim@lab.example (id 2) -> verge user kim@lab.example (created)" in proc.stdout
    assert "label studio user id 3 -> verge user label-studio-3 (created)" in proc.stdout
    assert "imported 3 labels (0 already imported; 1 cancelled (skipped in Label Studio); " \
           "1 for images this database does not have); 1 open review tasks closed" in proc.stdout

    with session_scope(seed.url) as s:
        got = {(iid, name, c, at.isoformat()[:19], ms) for iid, name, c, at, ms in s.execute(
            select(Label.image_id, User.name, Label.cls, Label.created_at, Label.time_on_item_ms)
            .join(User, User.id == Label.user_id).where(Label.source.like("label-studio:%")))}
        assert s.get(ReviewTask, task_id).state == "done"
        kim = s.scalar(select(User).where(User.name == "kim@lab.example"))
        assert kim.role == "reviewer"
    want = set()
    for n, t in enumerate(tasks, start=1):
        iid = t["data"]["verge_image_id"]
        name = {1: "rev", 3: "label-studio-3"}.get(who[iid]) if isinstance(who[iid], int) else "kim@lab.example"
        want.add((iid, name, cls[iid], f"2026-05-0{1 + n % 8}T10:00:00", 2500))
    assert got == want
    # the labels are verge's now: the export shows them as final human labels
    rows = {r["image_id"]: r for r in map(json.loads, verge(env, "export", "--format", "jsonl").stdout.splitlines())}
    assert rows[ids["field"]]["final_label"] == "road_and_field"
    assert rows[ids["field"]]["final_label_source"] == "human"
    assert {h["reviewer"] for h in rows[ids["road"]]["human_labels"]} == {"rev"}

    again = verge(env, "import", "label-studio", str(export_file), "--user", "1=rev")
    assert "imported 0 labels (3 already imported" in again.stdout


@pytest.mark.parametrize("content, reason", [
    ("{not json", "is not JSON"),
    ('{"tasks": []}', "expected a list of tasks"),
    ('[{"data": {"sha256": "x"}, "annotations": [{"completed_by": 1, "result": [{"from_name": '
     '"choice", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}]}]}]',
     "is not one of field, road, road_and_field"),
])
def test_a_bad_label_studio_file_imports_nothing_and_says_why(seed, web_settings, tmp_path, content, reason):
    _seed(seed)
    path = tmp_path / "bad.json"
    path.write_text(content)
    proc = verge(env_of(web_settings), "import", "label-studio", str(path), check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and reason in proc.stderr, proc.stderr
    with session_scope(seed.url) as s:
        assert s.scalar(select(Label).where(Label.source.like("label-studio:%"))) is None
    proc = verge(env_of(web_settings), "import", "label-studio", str(tmp_path / "missing.json"), check=False)
    assert proc.returncode == 1 and "no file" in proc.stderr


def test_admins_download_the_same_exports_from_the_web(as_user, seed, tmp_path):
    import io
    import zipfile

    ids = _seed(seed)
    rev = as_user("someone", "reviewer")
    assert rev.get("/admin/export/label-studio").status_code == 403
    assert rev.get("/admin/export/dataset?format=hf").status_code == 403
    ada = as_user("ada", "admin")
    assert "Label Studio tasks" in ada.get("/admin/models").get_data(as_text=True)

    r = ada.get("/admin/export/label-studio")
    assert r.status_code == 200 and r.is_streamed
    assert r.headers["Content-Disposition"] == 'attachment; filename="verge-label-studio.json"'
    tasks = json.loads(r.get_data(as_text=True))
    assert {t["data"]["verge_image_id"] for t in tasks} == {ids["road"], ids["field"], ids["nosuffix"]}
    for t in tasks:
        jsonschema.validate(t, LS_TASK_SCHEMA)
        assert t["data"]["image"] == f"http://localhost/images/{t['data']['verge_image_id']}"
        assert ada.get(t["data"]["image"].replace("http://localhost", "")).status_code == 200

    r = ada.get("/admin/export/dataset?format=imagefolder&split=train=0.5,val=0.5")
    assert r.status_code == 200 and r.mimetype == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(r.get_data())).namelist()
    assert len(names) == 3 and all(n.split("/")[0] in ("train", "val") for n in names)
    assert {n.split("/")[1] for n in names} == {"road_and_field", "field", "road"}

    datasets = pytest.importorskip("datasets")
    r = ada.get("/admin/export/dataset?format=hf")
    zipfile.ZipFile(io.BytesIO(r.get_data())).extractall(tmp_path / "hf")
    ds = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "hf"), cache_dir=str(tmp_path / "c"))
    assert sorted(ds["train"]["image_id"]) == sorted([ids["road"], ids["field"], ids["nosuffix"]])

    for bad, reason in [("/admin/export/dataset?format=coco", "format must be"),
                        ("/admin/export/dataset?format=hf&split=a=2", "must lie in"),
                        ("/admin/export/label-studio?image_url={nope}", "image_url may only"),
                        ("/admin/export/label-studio?batch=nope", "no batch")]:
        r = ada.get(bad)
        assert r.status_code in (400, 404) and reason in r.get_data(as_text=True), bad


def test_the_readme_shows_the_labeling_config_the_tasks_are_made_for():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert LABEL_CONFIG.strip() in readme
