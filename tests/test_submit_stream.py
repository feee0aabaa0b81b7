"""`verge submit` reads folders as it goes (os.scandir, no stat per plain file) and submits each
file once however it is reached: de-duplicated on (st_dev, st_ino)."""
from __future__ import annotations

import json
import os

from tests.conftest import verge
from workers.submission import FOLDER_RULE, iter_files


def test_folders_are_read_lazily_in_name_order(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in ("2.jpg", "1.jpg", "notes.txt", ".hidden.jpg"):
        (tmp_path / "a" / name).write_bytes(b"x" + name.encode())
    skipped: list = []
    files = iter_files([tmp_path], skipped=skipped)
    assert next(files) == str(tmp_path / "a" / "1.jpg")
    # b/ has not been listed yet: a file created now is still found
    (tmp_path / "b" / "late.jpg").write_bytes(b"late")
    assert list(files) == [str(tmp_path / "a" / "2.jpg"), str(tmp_path / "b" / "late.jpg")]
    assert skipped == [(str(tmp_path / "a" / "notes.txt"), FOLDER_RULE)]


def test_each_file_is_submitted_once_however_it_is_reached(tmp_path):
    pics = tmp_path / "pics"
    (pics / "sub").mkdir(parents=True)
    (pics / "one.jpg").write_bytes(b"1")
    os.link(pics / "one.jpg", pics / "sub" / "hardlink.jpg")       # same inode
    (pics / "sub" / "two.jpg").write_bytes(b"2")
    os.symlink(pics / "sub", pics / "again")                        # the same folder again
    os.symlink(pics / "sub" / "two.jpg", pics / "alias.jpg")        # a file via a link
    os.symlink(pics, pics / "sub" / "loop")                         # a cycle
    got = list(iter_files([pics, pics / "one.jpg", pics / "sub"]))
    assert got == [str(pics / "alias.jpg"), str(pics / "one.jpg")]
    missing: list = []
    assert list(iter_files([tmp_path / "nope"], skipped=missing)) == []
    assert missing == [(tmp_path / "nope", "no such file or folder")]


def test_submit_of_a_folder_streams_through_the_cli(tiny_env, tmp_path):
    from tests.corpus import jpeg_bytes

    pics = tmp_path / "pics"
    for i in range(300):  # more than one registration group
        sub = pics / f"d{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i}.jpg").write_bytes(jpeg_bytes(i))
    os.link(pics / "d0" / "0.jpg", pics / "d1" / "same-inode.jpg")
    out = json.loads(verge(tiny_env, "submit", str(pics), str(pics / "d2"), "--json").stdout)
    assert out["submitted"] == 300 and out["new"] == 300 and out["chunks"] >= 2
