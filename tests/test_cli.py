"""What a user sees when they get something wrong: one line, no traceback, non-zero exit."""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import port_open, verge


def one_line_error(proc) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("verge: error: ")
    return lines[0]


def test_a_wrong_setting_names_the_setting(tiny_env):
    line = one_line_error(verge({**tiny_env, "VERGE_CHUNK_SIZE": "lots"}, "status", check=False))
    assert "VERGE_CHUNK_SIZE='lots' is not valid" in line


def test_missing_pretrained_weights_end_in_one_sentence_naming_the_setting(tmp_path):
    env = {"VERGE_DATA_DIR": str(tmp_path / "var")}  # the default: ViT-B-32 with OpenAI's weights
    line = one_line_error(verge(env, "worker", check=False, timeout=180))
    assert "pretrained weights 'openai' for encoder 'ViT-B-32' are not available" in line
    assert "VERGE_PRETRAINED" in line


def test_a_broker_that_is_down_fails_the_submission_before_anything_is_written(tmp_path, tiny_env):
    port = next(p for p in range(6390, 6490) if not port_open("127.0.0.1", p))
    env = {**tiny_env, "VERGE_BROKER_URL": f"redis://127.0.0.1:{port}/0"}
    (tmp_path / "a.jpg").write_bytes(b"whatever")
    line = one_line_error(verge(env, "submit", str(tmp_path / "a.jpg"), "--batch", "b", check=False))
    assert "cannot reach the broker" in line and "VERGE_BROKER_URL" in line
    status = json.loads(verge(tiny_env, "status", "--json").stdout)
    assert status["batches"] == [] and status["totals"]["images"] == 0


def test_nothing_to_submit_and_unknown_batches_are_explained(tiny_env, tmp_path):
    assert "nothing to submit" in one_line_error(verge(tiny_env, "submit", check=False))
    assert "no batch named" in one_line_error(verge(tiny_env, "status", "nope", check=False))
    missing = tmp_path / "missing-folder"
    line = one_line_error(verge(tiny_env, "train", "binary", str(missing), check=False))
    assert "is not a folder" in line


def test_path_lists_and_skipped_files(tiny_env, tmp_path):
    from tests.corpus import jpeg_bytes

    (tmp_path / "pics").mkdir()
    for i in range(3):
        (tmp_path / "pics" / f"{i}.jpg").write_bytes(jpeg_bytes(i))
    (tmp_path / "pics" / "readme.md").write_text("hi")
    lst = tmp_path / "list.txt"
    lst.write_text("pics/0.jpg\npics/1.jpg\n")
    out = json.loads(verge(tiny_env, "submit", str(lst), "--json").stdout)
    assert out["submitted"] == 2
    out = json.loads(verge(tiny_env, "submit", str(tmp_path / "pics"), "--json").stdout)
    assert out["submitted"] == 3 and out["new"] == 1
    assert [s["path"].rsplit("/", 1)[-1] for s in out["skipped"]] == ["readme.md"]


def test_settings_command_lists_every_setting():
    from verge.settings import settings_table

    out = verge({}, "settings").stdout
    for env, _, _ in settings_table():
        assert env in out


def test_demo_runs_offline_and_says_its_weights_are_random(tmp_path):
    from verge.demo import generate_photos

    photos = generate_photos(tmp_path / "photos", per_class=10)
    # verge-tiny has no published weights: the demo must fall back, loudly, as it would offline
    env = {"VERGE_DATA_DIR": str(tmp_path / "var"), "VERGE_ENCODER": "verge-tiny",
           "VERGE_PRETRAINED": "openai"}
    out = verge(env, "demo", "--no-serve", "--data", str(photos), timeout=600)
    assert "RANDOM WEIGHTS" in out.stdout and "NOT meaningful" in out.stdout
    assert "Falling back to random weights" in out.stderr
    assert "epoch 7:" in out.stdout
    table = out.stdout.split("RANDOM WEIGHTS", 1)[1]
    assert "failed: truncated or corrupt image data" in table and "failed: text file, not an image" in table
    assert "scored, 2 failed" in out.stdout
    # the table shows whole folder/file names (fields/field-03.jpg, not ...ld-03.jpg)
    assert re.search(r"^(fields/field|roads/road)-\d\d\.jpg ", table, re.M)
    assert re.search(r"^demo-broken/truncated\.jpg ", table, re.M)
    # and it ends with the next three steps, with commands that work when pasted
    steps = out.stdout.split("Next steps:", 1)[1]
    data = str((tmp_path / "var").resolve())
    assert "1. create a reviewer" in steps and f"VERGE_DATA_DIR={data} " in steps
    assert re.search(r"-m verge users add alice --role reviewer|verge users add alice --role reviewer", steps)
    assert "2. start the web UI, then open http://127.0.0.1:8000/review" in steps
    assert re.search(r"-m verge web$|verge web$", steps, re.M)
    assert re.search(r"3\. label: sign in as alice; \d+ images? (are|is) waiting", steps)


def test_submit_of_missing_paths_exits_non_zero_and_names_them(tiny_env, tmp_path):
    from tests.corpus import jpeg_bytes

    gone, also_gone = tmp_path / "no-such-dir", tmp_path / "nope.jpg"
    proc = verge(tiny_env, "submit", str(gone), str(also_gone), "--batch", "x", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert lines == [f"skipped {gone}: no such file or folder",
                     f"skipped {also_gone}: no such file or folder",
                     "verge: error: nothing to submit: none of the 2 paths given exist; "
                     "no batch was created"]
    assert json.loads(verge(tiny_env, "status", "--json").stdout)["batches"] == []  # no empty batch

    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(1))
    proc = verge(tiny_env, "submit", str(gone), str(tmp_path / "a.jpg"), "--batch", "y", check=False)
    assert proc.returncode == 1  # as cp and rsync: the rest went in, the status says not all
    assert f"skipped {gone}: no such file or folder" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "verge: error: 1 of 2 paths given do not exist (named above); the rest were submitted "
        "as batch y")
    batches = json.loads(verge(tiny_env, "status", "--json").stdout)["batches"]
    assert [(b["batch"], b["total"]) for b in batches] == [("y", 1)]


@pytest.mark.services
def test_commands_that_need_the_database_migrate_sqlite_and_ask_for_a_shared_one(tiny_env, pg_url):
    import migrations

    # embedded SQLite: the first command that needs the database migrates it
    assert json.loads(verge(tiny_env, "models", "list", "--json").stdout) == []
    assert verge(tiny_env, "db", "current").stdout.strip() == migrations.head_revision()
    # a shared database is migrated on purpose: each such command says how, in one line,
    # and leaves the database as it was
    env = {**tiny_env, "VERGE_DATABASE_URL": pg_url}
    for args in (("status",), ("models", "list"), ("users", "list"), ("requeue",)):
        line = one_line_error(verge(env, *args, check=False))
        assert "is at revision none" in line and "run `verge db upgrade`" in line, args
    assert verge(env, "db", "current").stdout.strip() == "none (empty database)"
    verge(env, "db", "upgrade")
    assert verge(env, "users", "list").stdout.startswith("no users yet")
