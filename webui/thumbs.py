"""Image bytes as browsers want them: the content type sniffed from the bytes themselves (never
from a file name), and thumbnails made once and kept under ``<data_dir>/thumbs``."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

THUMB_PX = 320
_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
# every type sniff_mime answers (the API's contract lists them)
IMAGE_MIMES = tuple(dict.fromkeys([m for _, m in _SIGNATURES] + [
    "image/webp", "image/avif", "image/heic", "application/octet-stream"]))


def sniff_mime(head: bytes) -> str:
    """The image type of the first bytes of a file; ``application/octet-stream`` (served with
    nosniff, so never rendered) for anything verge does not recognise, SVG and HTML included."""
    for magic, mime in _SIGNATURES:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
            return "image/heic"
    return "application/octet-stream"


def thumb_path(root: Path, sha256: str) -> Path:
    return Path(root) / sha256[:2] / f"{sha256}-{THUMB_PX}.jpg"


def ensure_thumbnail(source: Path, target: Path, max_pixels: int) -> bool:
    """Write a JPEG thumbnail of ``source`` to ``target`` unless it is there already. False when
    the image cannot be decoded or has more than ``max_pixels`` pixels (VERGE_MAX_IMAGE_PIXELS,
    the workers' limit, checked from the header before any pixel is decoded; PIL's own guard
    only refuses twice its limit). The caller shows a placeholder."""
    if target.exists():
        return True
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = None  # PIL's guard is approximate (2x); the exact check is below
    try:
        with Image.open(source) as im:
            width, height = im.size
            if width * height > max_pixels:
                return False
            im.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a reduced scale
            im = ImageOps.exif_transpose(im)
            im.thumbnail((THUMB_PX, THUMB_PX))
            im = im.convert("RGB")
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-", suffix=".jpg")
            try:
                with os.fdopen(fd, "wb") as f:
                    im.save(f, "JPEG", quality=82, optimize=True)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return False
    return True
