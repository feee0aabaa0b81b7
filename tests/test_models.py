import numpy as np
import pytest
import torch

from models.encoder import EncoderSpec, WeightsUnavailable, load_encoder
from models.heads import BINARY, BinaryHead, HeadMismatch, load_head, new_binary_head, save_head
from models.zeroshot import zero_shot_for
from tests.corpus import jpeg_bytes
from models.images import decode_image


def test_tiny_encoder_gives_unit_vectors_of_its_own_dimension(tiny_encoder):
    imgs = [decode_image(jpeg_bytes(i)) for i in range(5)]
    a = tiny_encoder.encode_images(imgs, batch_size=2)
    assert a.shape == (5, 64) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, tiny_encoder.encode_images(imgs, batch_size=5), atol=1e-5)
    assert tiny_encoder.image_size == 64 and tiny_encoder.embedding_dim == 64


def test_random_weights_are_the_same_in_every_process(tiny_encoder):
    again = load_encoder(EncoderSpec("verge-tiny", "none"), "cpu")
    img = [decode_image(jpeg_bytes(9))]
    np.testing.assert_array_equal(tiny_encoder.encode_images(img), again.encode_images(img))
    assert again.key == "verge-tiny/random-seed0"


def test_texts_and_zero_shot(tiny_encoder):
    t = tiny_encoder.encode_texts(["this is a photo of a field", "this is a photo of a road."])
    assert t.shape == (2, 64)
    zs = zero_shot_for(tiny_encoder, ("a", "b"), ("field", "road"))
    assert zero_shot_for(tiny_encoder, ("a", "b"), ("field", "road")) is zs  # text encoded once
    p = zs.predict(tiny_encoder.encode_images([decode_image(jpeg_bytes(i)) for i in range(3)]))
    assert p.shape == (3, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_binary_head_is_exactly_the_seeds_architecture():
    head = BinaryHead(64)
    layers = list(head.net)
    assert [type(m) for m in layers] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert (layers[0].in_features, layers[0].out_features) == (64, 256)
    assert (layers[2].in_features, layers[2].out_features) == (256, 1)
    p = head(torch.zeros(4, 64))
    assert p.shape == (4,) and bool(((p > 0) & (p < 1)).all())


def test_checkpoints_carry_metadata_and_refuse_another_encoder(tmp_path):
    head = new_binary_head(64, "verge-tiny/random-seed0")
    head.meta.metrics = {"train_accuracy": 0.9}
    path = save_head(head, tmp_path / "h.pt")
    back = load_head(path, "verge-tiny/random-seed0")
    assert back.meta.kind == BINARY and back.meta.classes == ("field", "road")
    assert back.meta.embedding_dim == 64 and back.meta.metrics == {"train_accuracy": 0.9}
    x = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
    np.testing.assert_allclose(back.predict(x), head.predict(x))
    with pytest.raises(HeadMismatch, match="trained on embeddings of 'verge-tiny/random-seed0'"):
        load_head(path, "ViT-B-32/openai")
    with pytest.raises(HeadMismatch, match="expects 64-d"):
        back.predict(np.zeros((1, 512), np.float32))


def test_pretrained_weights_that_cannot_be_had_fail_in_one_sentence():
    with pytest.raises(WeightsUnavailable) as err:
        load_encoder(EncoderSpec("ViT-B-32", "no-such-tag"))
    assert "known: openai" in str(err.value)
    with pytest.raises(WeightsUnavailable, match="no file at"):
        load_encoder(EncoderSpec("verge-tiny", "/nonexistent/weights.pt"))


def test_weights_neither_cached_nor_reachable_fail_in_one_sentence(monkeypatch, tmp_path):
    """Once the local cache has missed, the worker's loader (workers.weights) probes the download
    host before open_clip downloads: a machine that cannot reach it is told so in one sentence,
    not after the hub client's retries."""
    import socket

    from huggingface_hub import constants

    import workers.weights as weights

    with socket.socket() as closed:  # a port nobody listens on once this socket is closed
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(weights, "HUB", ("127.0.0.1", port))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert not weights.hub_reachable()
    with pytest.raises(WeightsUnavailable, match="not in the local cache and the download host "
                                                 "127.0.0.1 cannot be reached"):
        weights.load_encoder(EncoderSpec("ViT-B-32", "openai"), "cpu")


def test_a_local_weights_file_is_loaded(tmp_path, tiny_encoder):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_encoder.model.state_dict(), path)
    enc = load_encoder(EncoderSpec("verge-tiny", str(path)), "cpu")
    assert enc.key.startswith("verge-tiny/file-")
    img = [decode_image(jpeg_bytes(2))]
    np.testing.assert_allclose(enc.encode_images(img), tiny_encoder.encode_images(img), atol=1e-6)


def test_a_weights_files_key_is_hashed_once_at_load_never_per_image(tmp_path, tiny_encoder, monkeypatch,
                                                                     settings):
    """Scoring reads the encoder's key for every image; with a weights file that key is the
    file's sha256. It is computed when the encoder loads, and scoring a chunk (the production
    path: Scorer.score_chunk with its per-image predict) never reads the file again."""
    import migrations
    import models.encoder as encoder_module
    from store.blobs import BlobStore
    from store.db import session_scope
    from store.embeddings import stored_embeddings
    from store.images import register_images
    from workers.scoring import Scorer

    path = tmp_path / "tiny.pt"
    torch.save(tiny_encoder.model.state_dict(), path)
    hashed = []
    real_digest = encoder_module._file_digest
    monkeypatch.setattr(encoder_module, "_file_digest", lambda p: hashed.append(p) or real_digest(p))

    enc = load_encoder(EncoderSpec("verge-tiny", str(path)), "cpu")
    assert len(hashed) == 1 and enc.key == f"verge-tiny/file-{real_digest(path)}"
    for _ in range(1000):
        assert enc.key.startswith("verge-tiny/file-")

    url = settings.resolved_database_url
    migrations.upgrade(url)
    blobs = BlobStore(settings.resolved_blob_dir)
    with session_scope(url) as s:
        ids = register_images(s, None, [(f"p{i}.jpg", blobs.put(jpeg_bytes(500 + i)), 1)
                                          for i in range(6)]).image_ids
    report = Scorer(settings, encoder=enc).score_chunk(ids)
    assert report.scored == 6
    assert len(hashed) == 1
    with session_scope(url) as s:
        assert stored_embeddings(s, ids, enc.key).keys() == set(ids)  # recorded under that key
        # and the captions' text embeddings, under the same key, for re-scores that load no CLIP
        from workers.scoring import recorded_judges

        judges = recorded_judges(s, settings, enc.key)
        assert judges is not None and recorded_judges(s, settings, "verge-tiny/random-seed0") is None
        assert np.allclose(judges.zero_shot3.text, enc.encode_texts(judges.zero_shot3.captions))
