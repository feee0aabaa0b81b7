"""An encoder's weights for a worker: loaded with the download host probed first, and checked in
a spawned process before a worker forks its pool.

``models.encoder.load_encoder`` builds an encoder from a weights file or the local cache and lets
open_clip download what is missing. A machine that cannot reach the download host would then
fail only after the hub client's retries, with a message of its own; ``load_encoder`` here opens
one TCP connection first and fails in one sentence instead. ``verify_weights`` answers, before
the worker starts, whether its pool processes will be able to load the encoder at all.
"""
from __future__ import annotations

import multiprocessing
import socket
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from models.encoder import Encoder, EncoderSpec, check_known
from models.encoder import load_encoder as build_encoder
from models.errors import WeightsUnavailable

HUB = ("huggingface.co", 443)  # where open_clip downloads pretrained weights from


def hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(HUB, timeout=timeout).close()
        return True
    except OSError:
        return False


def _require_hub(spec: EncoderSpec) -> None:
    if not hub_reachable():
        raise WeightsUnavailable(spec, "they are not in the local cache and the download host "
                                       f"{HUB[0]} cannot be reached")


def load_encoder(spec: EncoderSpec, device: str = "auto") -> Encoder:
    """``models.encoder.load_encoder``, with the download host probed before a download: weights
    neither in a file nor in the local cache raise WeightsUnavailable at once when it is down."""
    return build_encoder(spec, device, before_download=_require_hub)


def verify_weights(spec: EncoderSpec) -> None:
    """Raise WeightsUnavailable/UnknownEncoder now if ``load_encoder(spec)`` would.

    Pretrained tags are tried in a separate, spawned process: a parent that is about to fork
    workers must not run torch itself (OpenMP thread pools do not survive fork, and a CUDA
    context cannot be shared), and the weights stay out of its memory.
    """
    check_known(spec)
    if spec.random:
        return
    path = Path(spec.pretrained).expanduser()
    if path.is_file():
        return
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        problem = pool.submit(_try_load, spec).result()
    if problem:
        raise WeightsUnavailable(spec, problem)


def _try_load(spec: EncoderSpec) -> str | None:
    """In the spawned process."""
    try:
        load_encoder(spec, "cpu")
        return None
    except WeightsUnavailable as exc:
        return exc.detail
