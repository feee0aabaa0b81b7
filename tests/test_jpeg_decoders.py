"""The library-backed JPEG decoders (VERGE_GPU_DECODE=dali / nvimgcodec) and the device half of the
pipeline's memory bounds, on the CPU.

DALI runs here on its CPU backend: the same pipeline (external source -> ``fn.decoders.image``)
that runs with the ``mixed`` backend on a CUDA worker, checked against Pillow's decode and through
``embed_keys``. nvImageCodec needs a CUDA device even for its CPU backends, so here only its
refusal is checked; its decode is measured by bench/gpu_run.sh on a GPU.
"""
from __future__ import annotations

import io
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

import models.pipeline as pipeline
from models.images import open_checked
from models.jpeg_decoders import (DaliDecoder, DecoderUnavailable, NvimgcodecDecoder, jpeg_decoder,
                                  missing_library)
from models.pipeline import embed_keys, intra_op_threads, upload
from tests.corpus import good_corpus, jpeg_bytes
from tests.decoding import TAKES, assert_same_as_cpu, grey_jpeg, mixed_files, progressive


def _photo(seed: int, size, **save) -> bytes:
    """A JPEG with detail in it (gradients and noise), not a flat colour."""
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    arr = (0.5 * x + 0.3 * y + rng.normal(0, 20, (h, w, 3))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def test_dali_decodes_baseline_progressive_and_grey_jpegs_as_pillow_does():
    files = [_photo(1, (320, 240)), _photo(2, (333, 201), progressive=True),
             _photo(3, (64, 48), subsampling=0), grey_jpeg(), jpeg_bytes(5, (120, 90))]
    dali = DaliDecoder(torch.device("cpu"), threads=2, max_batch=4)  # 5 files: two runs
    decoded = dali.decode(files)
    assert len(decoded) == len(files)
    for data, ours in zip(files, decoded):
        pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert ours is not None and ours.dtype == torch.uint8
        assert tuple(ours.shape) == (3, *pil.shape[:2])
        diff = np.abs(ours.permute(1, 2, 0).numpy().astype(int) - pil.astype(int))
        # both are libjpeg-style decoders; upsampling/IDCT details may differ by a level or two
        assert diff.mean() < 1.0 and diff.max() <= 24, (diff.mean(), diff.max())


def test_dali_returns_none_for_a_file_it_cannot_decode_and_goes_on():
    good = jpeg_bytes(4, (200, 150))
    garbled = good[:300] + b"\xff\x00" * 4000  # header intact, scan data destroyed, no EOI
    dali = DaliDecoder(torch.device("cpu"), threads=2, max_batch=8)
    decoded = dali.decode([good, b"not a jpeg at all", garbled, good])
    assert decoded[1] is None
    assert decoded[0] is not None and decoded[3] is not None
    assert torch.equal(decoded[0], decoded[3])
    assert dali.decode([good])[0] is not None  # the pipeline was rebuilt and still works


@pytest.mark.parametrize("name,data,nvjpeg,dali", TAKES)
def test_dali_and_nvimgcodec_take_progressive_jpegs_nvjpeg_does_not(name, data, nvjpeg, dali):
    cpu = torch.device("cpu")
    assert jpeg_decoder("nvjpeg", cpu).takes(open_checked(data), data) is nvjpeg
    assert jpeg_decoder("dali", cpu, 2, 8).takes(open_checked(data), data) is dali


def test_nvimgcodec_refuses_a_cpu_device_in_one_sentence():
    with pytest.raises(DecoderUnavailable, match="nvimgcodec needs a CUDA device"):
        NvimgcodecDecoder(torch.device("cpu"))


def test_a_missing_library_is_named_with_how_to_install_it(monkeypatch):
    assert missing_library("dali") is None  # the dev extra installs DALI
    assert missing_library("nvjpeg") is None and missing_library("off") is None
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("nvidia.") else real(name, *a))
    why = missing_library("dali")
    assert why == ("VERGE_GPU_DECODE=dali needs NVIDIA DALI, which is not installed: "
                   "pip install 'verge[gpu]' (or use nvjpeg, resize or off)")
    with pytest.raises(DecoderUnavailable, match="needs NVIDIA DALI"):
        DaliDecoder(torch.device("cpu"))


def test_dali_mode_decodes_every_plain_jpeg_and_keeps_every_failure(tiny_encoder, monkeypatch):
    """embed_keys with VERGE_GPU_DECODE=dali (DALI's CPU backend here): baseline and progressive
    photos go to DALI, everything else to Pillow; the same files fail with the same reasons as
    on the CPU path and the embeddings agree."""
    files, photos = mixed_files(every=6)
    keys = sorted(files)
    assert 0 < len([k for k in photos if progressive(files[k])]) < len(photos)

    handed = []
    real_decode = DaliDecoder.decode
    monkeypatch.setattr(DaliDecoder, "decode", lambda self, datas: handed.extend(datas) or real_decode(self, datas))
    cpu = embed_keys(tiny_encoder, keys, files.__getitem__, batch_size=8, threads=2)
    dev = embed_keys(tiny_encoder, keys, files.__getitem__, batch_size=8, threads=2, device_decode="dali")

    by_bytes = {files[k]: k for k in keys}
    took = {by_bytes[d] for d in handed}
    assert set(photos) <= took  # every photo, progressive ones included, was decoded by DALI
    assert not took & (set(good_corpus()) - {"plain.jpg"})  # CMYK, PNG, WebP, rotated: Pillow
    assert_same_as_cpu(cpu, dev, keys)


@pytest.mark.parametrize("mode", ["nvjpeg", "dali"])
def test_each_full_resolution_decode_is_freed_once_resized(tiny_encoder, monkeypatch, mode):
    """At most one full-resolution decode is alive when the next one is resized, and the device
    decoder never gets more than DECODE_GROUP files per call, whatever the batch size."""
    monkeypatch.setattr(pipeline, "DECODE_GROUP", 4)
    pipeline._decoders.clear()
    files = {f"p{i}.jpg": jpeg_bytes(40 + i, (640, 480)) for i in range(11)}
    alive, calls, peak = [], [], []
    prep = tiny_encoder.device_preprocessor
    real_prepare = type(prep).prepare
    decoder = pipeline._decoder_for(mode, tiny_encoder.device, 2)
    real_decode = type(decoder).decode

    def spy_decode(self, datas):
        calls.append(len(datas))
        out = real_decode(self, datas)
        alive.extend(weakref.ref(t) for t in out if t is not None)
        return out

    def spy_prepare(self, pixels):
        peak.append(sum(r() is not None for r in alive))
        return real_prepare(self, pixels)

    monkeypatch.setattr(type(decoder), "decode", spy_decode)
    monkeypatch.setattr(type(prep), "prepare", spy_prepare)
    done = embed_keys(tiny_encoder, list(files), files.__getitem__, batch_size=11, threads=2, device_decode=mode)
    pipeline._decoders.clear()
    assert len(done.vectors) == 11 and not done.errors
    assert max(calls) <= 4 and sum(calls) == 11
    # alive when each image is resized: itself and the rest of its group not reached yet --
    # nothing of an earlier group, nothing already resized
    assert peak == [k for n in calls for k in range(n, 0, -1)], (calls, peak)


def test_cpu_decoded_images_go_up_in_one_contiguous_copy():
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in
              [(64, 80), (120, 90), (1, 1), (33, 47)]]
    up = upload(images, torch.device("cpu"))
    assert [tuple(u.shape) for u in up] == [(3, h, w) for h, w, _ in (t.shape for t in images)]
    for u, t in zip(up, images):
        assert torch.equal(u, t.permute(2, 0, 1))
    # all of them are views of one buffer: one transfer per batch, not one per image
    assert len({u.untyped_storage().data_ptr() for u in up}) == 1
    assert upload([], torch.device("cpu")) == []


def test_intra_op_threads_share_the_cores_between_pool_processes():
    assert intra_op_threads(0, 1, cores=16) == 16
    assert intra_op_threads(0, 8, cores=16) == 2
    assert intra_op_threads(0, 3, cores=2) == 1
    assert intra_op_threads(5, 8, cores=16) == 5


def test_each_worker_pool_process_sets_its_share_of_torch_threads(tmp_path, tiny_env, start_worker):
    """A real `verge worker -c 2`: each pool process runs torch with cores // 2 intra-op threads
    (what torch reports after the setting is applied), not one per core each."""
    import os
    import re
    import time

    worker = start_worker(tiny_env, concurrency=2)
    expected = max(1, (os.cpu_count() or 1) // 2)
    pat = re.compile(r"pool process (\d+): (\d+) torch intra-op threads \(2 pool processes\)")
    deadline = time.monotonic() + 90
    while len(found := pat.findall(worker.log.read_text())) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len({pid for pid, _ in found}) == 2, worker.log.read_text()[-3000:]
    assert {int(n) for _, n in found} == {expected}
