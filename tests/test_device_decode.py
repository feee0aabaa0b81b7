"""The device decode path (nvJPEG + resize on the GPU) against the CPU path.

Runs here on the CPU: torchvision's ``decode_jpeg`` is the same call with ``device="cpu"``
(libjpeg-turbo instead of nvJPEG), and the resize/crop/normalise code is the code that runs on
CUDA. What a GPU adds (nvJPEG's own decoder) is exercised by bench/throughput.py on a GPU.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models.device_decode import Transform, transform_of
from models.encoder import EncoderSpec, load_encoder
from models.images import open_checked
from models.jpeg_decoders import device_decodable
from models.pipeline import embed_keys
from tests.corpus import SHARED_PHOTOS, bad_corpus, exif_rotated_jpeg, good_corpus, jpeg_bytes


@pytest.fixture(scope="module")
def tiny():
    return load_encoder(EncoderSpec("verge-tiny", "none"), "cpu")


def test_the_transform_is_read_off_open_clips_preprocess(tiny):
    assert transform_of(tiny.preprocess) == Transform(
        64, 64, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    from torchvision import transforms as T

    # a step the device path does not reproduce turns it off instead of being skipped silently
    assert transform_of(T.Compose([*tiny.preprocess.transforms, T.RandomHorizontalFlip()])) is None
    assert transform_of(T.Compose([T.Resize(64, interpolation=T.InterpolationMode.BILINEAR),
                                   *tiny.preprocess.transforms[1:]])) is None


@pytest.mark.parametrize("name,data,expected", [
    ("plain.jpg", jpeg_bytes(1, (300, 200)), True),
    ("grey.jpg", (lambda b: (Image.new("L", (90, 60), 80).save(b, "JPEG"), b.getvalue())[1])(io.BytesIO()), True),
    ("progressive.jpg", jpeg_bytes(2, (300, 200), progressive=True), False),
    ("exif-rotated.jpg", exif_rotated_jpeg(), False),
    ("cmyk.jpg", good_corpus()["cmyk.jpg"], False),
    ("pic.webp", good_corpus()["pic.webp"], False),
    ("truncated.jpg", bad_corpus()["truncated.jpg"], False),
])
def test_only_plain_complete_jpegs_take_the_device_path(name, data, expected):
    assert device_decodable(open_checked(data), data) is expected


def _cosines(a, b):
    return {k: float(np.dot(a[k], b[k])) for k in a}


@pytest.mark.parametrize("mode", ["nvjpeg", "resize"])
def test_device_path_matches_the_cpu_path_and_keeps_every_failure(tiny, mode):
    """Real photos (large and small, baseline and progressive) plus the good and bad corpora:
    the same images succeed, the same fail with the same reasons, and the embeddings agree."""
    files = {p.name: p.read_bytes() for p in sorted(SHARED_PHOTOS.glob("*/*.jp*g"))[::4]}
    photos = list(files)
    files.update(good_corpus())
    files.update(bad_corpus())
    # JPEG with a valid header and end marker but garbage scan data: the device decoder refuses
    # it (or decodes noise); either way the batch goes on
    full = jpeg_bytes(4, (200, 150))
    files["garbled.jpg"] = full[:400] + bytes(range(256)) * 8 + full[-2:]
    keys = sorted(files)
    # the baseline photos really do take the nvJPEG path, the progressive ones stay with Pillow
    baseline = [k for k in photos if not Image.open(io.BytesIO(files[k])).info.get("progressive")]
    assert 0 < len(baseline) < len(photos)
    assert [k for k in photos if device_decodable(open_checked(files[k]), files[k])] == baseline

    cpu = embed_keys(tiny, keys, files.__getitem__, batch_size=8, threads=2)
    dev = embed_keys(tiny, keys, files.__getitem__, batch_size=8, threads=2, device_decode=mode)

    assert set(cpu.errors) - {"garbled.jpg"} == set(dev.errors) - {"garbled.jpg"}
    assert {k: v for k, v in dev.errors.items() if k != "garbled.jpg"} == \
        {k: v for k, v in cpu.errors.items() if k != "garbled.jpg"}
    assert set(bad_corpus()) <= set(dev.errors)
    assert set(dev.vectors) | set(dev.errors) == set(keys)
    shared = {k: dev.vectors[k] for k in dev.vectors if k in cpu.vectors and k != "garbled.jpg"}
    assert len(shared) >= len(keys) - len(bad_corpus()) - 1
    cos = _cosines(shared, cpu.vectors)
    worst = min(cos, key=cos.get)
    assert cos[worst] > 0.99, (worst, cos[worst])
    assert {k: dev.sizes[k] for k in shared} == {k: cpu.sizes[k] for k in shared}


def test_device_preprocess_equals_open_clips_on_an_image_it_need_not_scale(tiny):
    """At exactly the model's size resize and crop are the identity: the pixels must equal
    open_clip's preprocess of the same decoded image to float rounding."""
    data = jpeg_bytes(7, (64, 64))
    decoded = tiny.device_preprocessor.decode([data])[0]
    ours = tiny.device_preprocessor.prepare(decoded)
    theirs = tiny.preprocess(Image.fromarray(decoded.permute(1, 2, 0).numpy()))
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_an_unknown_mode_is_refused(tiny):
    with pytest.raises(ValueError, match="device_decode must be one of"):
        embed_keys(tiny, [], bytes, device_decode="yes")
