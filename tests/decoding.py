"""What the device-decode tests (test_device_decode: nvJPEG/resize) and the library-decoder tests
(test_jpeg_decoders: DALI/nvImageCodec) check the same way: which files a device decoder takes,
the mixed file set both paths are run on, and the comparison of a device run with the CPU run."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.corpus import SHARED_PHOTOS, bad_corpus, exif_rotated_jpeg, good_corpus, jpeg_bytes

GARBLED = "garbled.jpg"


def grey_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (90, 60), 80).save(buf, "JPEG")
    return buf.getvalue()


# (name, file, taken by nvJPEG, taken by DALI / nvImageCodec): only plain, complete JPEGs go to a
# device decoder, and only the library decoders take progressive ones
TAKES = [
    ("plain.jpg", jpeg_bytes(1, (300, 200)), True, True),
    ("progressive.jpg", jpeg_bytes(2, (300, 200), progressive=True), False, True),
    ("grey.jpg", grey_jpeg(), True, True),
    ("exif-rotated.jpg", exif_rotated_jpeg(), False, False),
    ("cmyk.jpg", good_corpus()["cmyk.jpg"], False, False),
    ("pic.webp", good_corpus()["pic.webp"], False, False),
    ("truncated.jpg", bad_corpus()["truncated.jpg"], False, False),
]


def mixed_files(every: int) -> tuple[dict[str, bytes], list[str]]:
    """Every ``every``-th shared photo (large and small, baseline and progressive), the good and
    the bad corpus, and a JPEG with a valid header and end marker but garbage scan data (a device
    decoder refuses it or decodes noise; either way the batch goes on). Returns (files by name,
    the photos' names)."""
    files = {p.name: p.read_bytes() for p in sorted(SHARED_PHOTOS.glob("*/*.jp*g"))[::every]}
    photos = list(files)
    files.update(good_corpus())
    files.update(bad_corpus())
    full = jpeg_bytes(4, (200, 150))
    files[GARBLED] = full[:400] + bytes(range(256)) * 8 + full[-2:]
    return files, photos


def progressive(data: bytes) -> bool:
    return bool(Image.open(io.BytesIO(data)).info.get("progressive"))


def assert_same_as_cpu(cpu, dev, keys: list[str]) -> None:
    """``dev`` (an embed_keys run with a device decoder) against ``cpu`` (the same files on the
    CPU path): the same images fail with the same reasons (the garbled one aside), every bad file
    fails, every file is accounted for, and the embeddings and sizes of the rest agree."""
    assert set(cpu.errors) - {GARBLED} == set(dev.errors) - {GARBLED}
    assert {k: v for k, v in dev.errors.items() if k != GARBLED} == \
        {k: v for k, v in cpu.errors.items() if k != GARBLED}
    assert set(bad_corpus()) <= set(dev.errors)
    assert set(dev.vectors) | set(dev.errors) == set(keys)
    shared = {k: dev.vectors[k] for k in dev.vectors if k in cpu.vectors and k != GARBLED}
    assert len(shared) >= len(keys) - len(bad_corpus()) - 1
    cos = {k: float(np.dot(shared[k], cpu.vectors[k])) for k in shared}
    worst = min(cos, key=cos.get)
    assert cos[worst] > 0.99, (worst, cos[worst])
    assert {k: dev.sizes[k] for k in shared} == {k: cpu.sizes[k] for k in shared}
