"""Builders for test images: realistic good ones and a corpus of bad input, made on the fly."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fields-roads"


def jpeg_bytes(seed: int, size=(96, 72), **save) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85, **save)
    return buf.getvalue()


def png_bytes(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **save)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width=20000, height=20000) -> bytes:
    """A PNG whose header claims width x height pixels (of 1-bit grey); the pixel data is a few
    kilobytes of zlib -- exactly what a decompression bomb looks like to a decoder."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(64)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    """A 120x60 landscape JPEG whose EXIF says 'rotate 90°': decoded it must be 60x120."""
    img = Image.new("RGB", (120, 60), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def good_corpus() -> dict[str, bytes]:
    """Unusual but valid images: each must decode to RGB and be scored."""
    out = {}
    out["cmyk.jpg"] = (lambda b: (Image.new("CMYK", (80, 60), (10, 200, 30, 5)).save(b, "JPEG"), b.getvalue())[1])(io.BytesIO())
    out["gray16.png"] = png_bytes(Image.fromarray((np.arange(80 * 60, dtype=np.uint16).reshape(60, 80) * 13)))
    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (10, 10, 40, 40))
    out["palette-transparent.png"] = png_bytes(pal, transparency=0)
    out["alpha.png"] = png_bytes(Image.new("RGBA", (50, 70), (0, 128, 255, 100)))
    out["exif-rotated.jpg"] = exif_rotated_jpeg()
    out["tiny-1x1.png"] = png_bytes(Image.new("RGB", (1, 1), (1, 2, 3)))
    frames = [Image.new("P", (40, 40), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out["animated.gif"] = buf.getvalue()
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 90, 0)).save(buf, "WEBP")
    out["pic.webp"] = buf.getvalue()
    return out


def bad_corpus() -> dict[str, bytes]:
    """Files that must end as failed with a one-line reason, never crash a worker."""
    full = jpeg_bytes(1, (400, 300))
    png = png_bytes(Image.new("RGB", (300, 200), (5, 5, 5)))
    return {
        "zero.jpg": b"",
        "truncated.jpg": full[: len(full) // 2],
        "truncated.png": png[: len(png) // 2],
        "random.jpg": np.random.default_rng(3).integers(0, 255, 5000, dtype=np.uint8).tobytes(),
        "page.jpg": b"<!DOCTYPE html><html><body>not a photo</body></html>",
        "notes.txt": b"just some notes\n",
        "bomb.png": bomb_png(),
    }


def varied_photo_copies(folder: Path, n: int, size: int = 96, source: Path = SHARED_PHOTOS) -> list[Path]:
    """``n`` distinct JPEGs made from the shared photos (downscaled to ``size`` px, one pixel
    changed per copy: identical files would be deduplicated). Falls back to generated noise
    pictures when the photos are absent."""
    folder.mkdir(parents=True, exist_ok=True)
    bases = []
    if source.is_dir():
        for p in sorted(source.rglob("*")):
            if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
                with Image.open(p) as im:
                    im.draft("RGB", (size * 2, size * 2))
                    bases.append(im.convert("RGB").resize((size, size * 3 // 4)))
    if not bases:
        rng = np.random.default_rng(0)
        bases = [Image.fromarray(rng.integers(0, 255, (size * 3 // 4, size, 3), dtype=np.uint8))
                 for _ in range(20)]
    out = []
    for i in range(n):
        img = bases[i % len(bases)].copy()
        k = i // len(bases)
        img.putpixel((k % size, (k // size) % (size * 3 // 4)), (k % 256, (k * 7) % 256, (k * 13) % 256))
        path = folder / f"copy-{i:05d}.jpg"
        img.save(path, quality=90)
        out.append(path)
    return out


# ----------------------------------------------------------------------------- uploads
HEIC_HEADER = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"


def big_exif_png(n_bytes: int = 4 * 1024 * 1024, variant: int = 0) -> bytes:
    """A 64x48 PNG carrying an eXIf chunk of ``n_bytes``: a valid TIFF block with Orientation 6
    (rotate 90°: decoded it is 48x64) and a MakerNote of ``n_bytes`` filler."""
    base = png_bytes(Image.new("RGB", (64, 48), (10 + variant % 200, 120, 40)))
    entries = 2
    data_at = 8 + 2 + 12 * entries + 4
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", entries)
            + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)                 # Orientation = 6, inline
            + struct.pack("<HHII", 0x927C, 7, n_bytes, data_at)         # MakerNote, UNDEFINED
            + struct.pack("<I", 0) + bytes([variant % 256]) * n_bytes)
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return base[:ihdr_end] + _png_chunk(b"eXIf", tiff) + base[ihdr_end:]


def _encode(img: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def upload_corpus(variant: int = 0) -> list[tuple[str, bytes, str]]:
    """Files as people upload them: ``(file name, bytes, expected)`` where expected is
    ``"scored"`` or ``"failed:<a word the one-line reason must contain>"``. Names include
    unicode, spaces, quotes, ``../`` and HTML; ``variant`` changes every file's bytes (but the
    empty one) so two uploads of the corpus are not deduplicated into one."""
    v = variant
    rng = np.random.default_rng(100 + v)

    def noise(w, h, mode="RGB"):
        arr = rng.integers(0, 255, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        return Image.fromarray(arr, mode)

    cmyk = Image.new("CMYK", (80, 60), (10 + v, 200, 30, 5))
    gray16 = Image.fromarray((np.arange(80 * 60, dtype=np.uint16).reshape(60, 80) * 13 + v))
    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([0, 0, 0, 255, v % 256, 0] + [0] * 762)
    pal.paste(1, (10, 10, 40, 40))
    frames = [Image.new("P", (40, 40), (i + v) % 256) for i in range(3)]
    rotated = Image.new("RGB", (120, 60), (200, 30 + 40 * v, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    full_jpeg = jpeg_bytes(1 + v, (400, 300))
    full_png = png_bytes(noise(300, 200))
    good = [
        ("cmyk.jpg", _encode(cmyk, "JPEG")),
        ("gray16.png", png_bytes(gray16)),
        ("palette-transparent.png", png_bytes(pal, transparency=0)),
        ("alpha.png", png_bytes(Image.new("RGBA", (50, 70), (0, 128, 255 - v, 100)))),
        ("la.png", png_bytes(Image.new("LA", (30, 30), (90 + v, 200)))),
        ("grey.png", png_bytes(noise(33, 21, "L"))),
        ("one-bit.png", png_bytes(noise(40, 40, "L").convert("1"))),
        ("exif-rotated.jpg", _encode(rotated, "JPEG", exif=exif.tobytes())),
        ("exif-4mb.png", big_exif_png(variant=v)),
        ("tiny-1x1.png", png_bytes(Image.new("RGB", (1, 1), (1, 2, 3 + v)))),
        ("strip-1000x1.png", png_bytes(noise(1000, 1))),
        ("animated.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:],
                                 duration=50 + 10 * v, loop=0)),
        ("pic.webp", _encode(noise(64, 48), "WEBP")),
        ("pic.bmp", _encode(noise(20, 20), "BMP")),
        ("pic.tif", _encode(noise(24, 18), "TIFF")),
        ("progressive.jpg", jpeg_bytes(40 + v, (120, 90), progressive=True)),
        ("jpeg-named.png", jpeg_bytes(50 + v)),
        ("straße фото 写真.jpg", jpeg_bytes(60 + v)),
        ("my holiday photo (1).jpg", jpeg_bytes(70 + v)),
        ("emoji 🚜 tractor.png", png_bytes(noise(16, 16))),
        ("quotes 'single' & ampersand;.jpg", jpeg_bytes(80 + v)),
        ("../../etc/passwd.jpg", jpeg_bytes(90 + v)),
        ("%2e%2e%2f%2e%2e%2fetc%2fshadow.jpg", jpeg_bytes(100 + v)),
        ("./trip/../../../outside.jpg", jpeg_bytes(105 + v)),
        ("/abs/path/photo.jpg", jpeg_bytes(110 + v)),
        ("<img src=x onerror=alert(1)>.jpg", jpeg_bytes(120 + v)),
    ]
    tag = f"-{v}".encode()
    bad = [
        ("zero.jpg", b"", "failed:empty"),
        ("truncated.jpg", full_jpeg[: len(full_jpeg) // 2], "failed:truncated"),
        ("truncated.png", full_png[: len(full_png) // 2], "failed:truncated"),
        ("random.jpg", rng.integers(0, 255, 5000, dtype=np.uint8).tobytes(), "failed:not an image"),
        ("page.jpg", b"<!DOCTYPE html><html><body>not a photo" + tag + b"</body></html>",
         "failed:HTML"),
        ("notes.txt", b"just some notes" + tag + b"\n", "failed:text file"),
        ("document.pdf.jpg", b"%PDF-1.4\n%" + bytes(range(128, 256)) + tag, "failed:PDF"),
        ("bomb.png", bomb_png() + tag, "failed:too large"),
        ("photo.heic", HEIC_HEADER + b"\x00" * 64 + tag, "failed:HEIC"),
        ("gif-header-only.gif", b"GIF89a\x10\x00\x10\x00" + tag, "failed:"),
        ("<script>alert(1)</script>.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40 + tag, "failed:"),
    ]
    return [(n, d, "scored") for n, d in good] + bad
