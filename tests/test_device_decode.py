"""The device decode path (nvJPEG + resize on the GPU) against the CPU path.

Runs here on the CPU: torchvision's ``decode_jpeg`` is the same call with ``device="cpu"``
(libjpeg-turbo instead of nvJPEG), and the resize/crop/normalise code is the code that runs on
CUDA. What a GPU adds (nvJPEG's own decoder) is exercised by bench/throughput.py on a GPU.
"""
from __future__ import annotations


import pytest
import torch
from PIL import Image

from models.device_decode import Transform, transform_of
from models.images import open_checked
from models.jpeg_decoders import device_decodable
from models.pipeline import embed_keys
from tests.corpus import jpeg_bytes
from tests.decoding import TAKES, assert_same_as_cpu, mixed_files, progressive


def test_the_transform_is_read_off_open_clips_preprocess(tiny_encoder):
    assert transform_of(tiny_encoder.preprocess) == Transform(
        64, 64, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    from torchvision import transforms as T

    # a step the device path does not reproduce turns it off instead of being skipped silently
    assert transform_of(T.Compose([*tiny_encoder.preprocess.transforms, T.RandomHorizontalFlip()])) is None
    assert transform_of(T.Compose([T.Resize(64, interpolation=T.InterpolationMode.BILINEAR),
                                   *tiny_encoder.preprocess.transforms[1:]])) is None


@pytest.mark.parametrize("name,data,expected", [(name, data, nvjpeg) for name, data, nvjpeg, _ in TAKES])
def test_only_plain_complete_jpegs_take_the_device_path(name, data, expected):
    assert device_decodable(open_checked(data), data) is expected


@pytest.mark.parametrize("mode", ["nvjpeg", "resize"])
def test_device_path_matches_the_cpu_path_and_keeps_every_failure(tiny_encoder, mode):
    """Real photos (large and small, baseline and progressive) plus the good and bad corpora:
    the same images succeed, the same fail with the same reasons, and the embeddings agree."""
    files, photos = mixed_files(every=4)
    keys = sorted(files)
    # the baseline photos really do take the nvJPEG path, the progressive ones stay with Pillow
    baseline = [k for k in photos if not progressive(files[k])]
    assert 0 < len(baseline) < len(photos)
    assert [k for k in photos if device_decodable(open_checked(files[k]), files[k])] == baseline

    cpu = embed_keys(tiny_encoder, keys, files.__getitem__, batch_size=8, threads=2)
    dev = embed_keys(tiny_encoder, keys, files.__getitem__, batch_size=8, threads=2, device_decode=mode)

    assert_same_as_cpu(cpu, dev, keys)


def test_device_preprocess_equals_open_clips_on_an_image_it_need_not_scale(tiny_encoder):
    """At exactly the model's size resize and crop are the identity: the pixels must equal
    open_clip's preprocess of the same decoded image to float rounding."""
    data = jpeg_bytes(7, (64, 64))
    decoded = tiny_encoder.device_preprocessor.decode([data])[0]
    ours = tiny_encoder.device_preprocessor.prepare(decoded)
    theirs = tiny_encoder.preprocess(Image.fromarray(decoded.permute(1, 2, 0).numpy()))
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_an_unknown_mode_is_refused(tiny_encoder):
    with pytest.raises(ValueError, match="device_decode must be one of"):
        embed_keys(tiny_encoder, [], bytes, device_decode="yes")
