"""The CLIP image/text encoder, named by a spec string the way open_clip names models.

One place builds encoders (``load_encoder``) and one type uses them (``Encoder``). The spec's
``key`` is what the database and head checkpoints record, so embeddings and heads of different
encoders can never be mixed up. Weights come from a file, the local cache, or open_clip's
download; probing the download host first and checking weights in a separate process are the
worker's business (``workers.weights``).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import open_clip
import torch

from .errors import UnknownEncoder, WeightsUnavailable

TINY = "verge-tiny"
_CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(_CONFIG_DIR)  # registers verge-tiny (a few layers, 64-px input)

RANDOM = "none"
_RANDOM_SEED = 0  # random-weight encoders are seeded so every worker builds the same one


@dataclass(frozen=True)
class EncoderSpec:
    name: str = "ViT-B-32"
    pretrained: str = "openai"

    @property
    def random(self) -> bool:
        return self.pretrained.lower() == RANDOM

    @property
    def key(self) -> str:
        """Identity recorded with embeddings and heads: name plus where the weights came from.

        For a weights file this hashes the whole file (~0.2 s for ViT-B-32): an ``Encoder``
        computes it once, when it loads, and hot paths read ``Encoder.key``."""
        if self.random:
            return f"{self.name}/random-seed{_RANDOM_SEED}"
        path = Path(self.pretrained).expanduser()
        if path.is_file():
            return f"{self.name}/file-{_file_digest(path)}"
        return f"{self.name}/{self.pretrained}"


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{requested}' was asked for but no CUDA device is available")
    return device


class Encoder:
    """A loaded open_clip model in eval mode: images and texts in, L2-normalised float32 out."""

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, preprocess, device: torch.device,
                 key: str | None = None):
        self.spec = spec
        # read per image by scoring: a weights file is hashed here, once, never per access
        self.key: str = key if key is not None else spec.key
        self.model = model
        self.preprocess = preprocess  # PIL RGB image -> float tensor (3, S, S)
        self.device = device
        self.tokenizer = open_clip.get_tokenizer(spec.name)
        visual = model.visual
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.embedding_dim = int(model.text_projection.shape[1]) if getattr(
            model, "text_projection", None) is not None else int(visual.output_dim)
        self.logit_scale = float(model.logit_scale.exp().item())
        self._autocast = device.type == "cuda"

    @functools.cached_property
    def device_preprocessor(self):
        """JPEG decode + preprocess on this encoder's device, or None where the model's
        transform has a step ``models.device_decode`` does not reproduce."""
        from .device_decode import DevicePreprocessor, transform_of

        t = transform_of(self.preprocess)
        return DevicePreprocessor(t, self.device) if t else None

    def _normalise(self, feats: torch.Tensor) -> np.ndarray:
        feats = feats.float()
        feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    @torch.inference_mode()
    def encode_batch(self, pixels: torch.Tensor) -> np.ndarray:
        """Encode preprocessed pixels (n, 3, S, S); returns (n, d) unit vectors."""
        if pixels.shape[0] == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        if self.device.type == "cuda" and pixels.device.type == "cpu":
            pixels = pixels.pin_memory()  # else non_blocking is a synchronous pageable copy
        pixels = pixels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self._autocast):
            return self._normalise(self.model.encode_image(pixels))

    def warm_up(self, batch_size: int) -> None:
        """On CUDA, run one full batch (and the JPEG decoder) so the first chunk does not pay
        for library initialisation and kernel selection. On a CPU there is nothing to gain."""
        if self.device.type != "cuda":
            return
        self.encode_batch(torch.zeros(batch_size, 3, self.image_size, self.image_size))
        if self.device_preprocessor is not None:
            import io

            from PIL import Image

            buf = io.BytesIO()
            Image.new("RGB", (self.image_size, self.image_size)).save(buf, "JPEG")
            self.device_preprocessor.decode([buf.getvalue()])
        torch.cuda.synchronize(self.device)

    def encode_images(self, images: Sequence, batch_size: int = 32) -> np.ndarray:
        """Encode PIL RGB images in batches of ``batch_size``."""
        out = [self.encode_batch(torch.stack([self.preprocess(im) for im in images[i:i + batch_size]]))
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.embedding_dim), np.float32)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self._autocast):
            return self._normalise(self.model.encode_text(tokens))


def check_known(spec: EncoderSpec) -> None:
    """Raise UnknownEncoder unless open_clip (or verge) knows an encoder of this name."""
    if spec.name not in open_clip.list_models():
        raise UnknownEncoder(f"unknown encoder '{spec.name}'; open_clip knows e.g. ViT-B-32, "
                             f"ViT-B-16, ViT-L-14, and verge adds {TINY}")


def load_encoder(spec: EncoderSpec, device: str = "auto", *,
                 before_download: Callable[[EncoderSpec], None] | None = None) -> Encoder:
    """Build the encoder; raise WeightsUnavailable (one clear reason) when weights can't be had.

    Pretrained weights come from the local cache first (no network); only when they are not
    there does open_clip download them, after ``before_download(spec)``, which may raise
    WeightsUnavailable instead (``workers.weights`` probes the download host there)."""
    check_known(spec)
    dev = pick_device(device)
    key = spec.key  # the identity of the weights about to be loaded (hashes a weights file)
    if spec.random:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_RANDOM_SEED)
            with _quiet():  # open_clip warns that the weights are random: that is the point
                model, _, preprocess = open_clip.create_model_and_transforms(spec.name, pretrained=None)
    else:
        model, preprocess = _load_pretrained(spec, before_download)
    model = model.to(dev).eval()
    return Encoder(spec, model, preprocess, dev, key)


def _load_pretrained(spec: EncoderSpec, before_download: Callable[[EncoderSpec], None] | None):
    path = Path(spec.pretrained).expanduser()
    looks_like_path = os.sep in spec.pretrained or path.suffix in (".pt", ".bin", ".safetensors", ".pth")
    if looks_like_path and not path.is_file():
        raise WeightsUnavailable(spec, f"no file at {path}")
    if not path.is_file() and spec.pretrained not in open_clip.list_pretrained_tags_by_model(spec.name):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(spec.name)) or "none published"
        raise WeightsUnavailable(spec, f"open_clip knows no such tag for this model; known: {tags}")
    source = str(path) if path.is_file() else spec.pretrained
    try:
        with _quiet(), _hub_offline():  # the local cache first: no network, no retries
            model, _, preprocess = open_clip.create_model_and_transforms(spec.name, pretrained=source)
        return model, preprocess
    except Exception as exc:
        if path.is_file():
            raise WeightsUnavailable(spec, f"the file could not be loaded: {_first_line(exc)}") from exc
    if before_download is not None:
        before_download(spec)
    try:
        with _quiet():
            model, _, preprocess = open_clip.create_model_and_transforms(spec.name, pretrained=source)
    except Exception as exc:  # download libraries raise a zoo of types; the user needs one line
        raise WeightsUnavailable(spec, f"the download failed: {_first_line(exc)}") from exc
    return model, preprocess


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


@contextlib.contextmanager
def _hub_offline():
    """Make huggingface_hub answer from its cache only (it reads this flag at call time)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - open_clip then downloads by URL
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


@contextlib.contextmanager
def _quiet():
    """open_clip and the hub log every failed attempt; verge reports the outcome in one line."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)
