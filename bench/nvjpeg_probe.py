"""Which JPEGs nvJPEG decodes fast on this GPU: baseline vs progressive, in batches of 256,
against libjpeg-turbo on one CPU thread. Needs CUDA; about 20 s.

    python bench/nvjpeg_probe.py [PHOTOS_DIR]      # default: the shared fields-roads photos

Why it exists: torchvision's batched ``decode_jpeg(..., device="cuda")`` sends baseline JPEGs to
the GPU's hardware JPEG engine and everything else through a hybrid path whose entropy decoding
runs on one CPU thread per process. ``models.jpeg_decoders.device_decodable`` routes by this.
"""
import io
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

N, BATCH = 512, 256


def megapixels(data: bytes) -> float:
    w, h = Image.open(io.BytesIO(data)).size
    return w * h / 1e6


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench: nvjpeg_probe needs a CUDA device")
    photos = sorted(C.photos_dir(sys.argv[1] if len(sys.argv) > 1 else None).rglob("*.jp*g"))
    groups: dict[str, list[bytes]] = {"baseline": [], "progressive": []}
    for p in photos:
        info = Image.open(p).info
        groups["progressive" if info.get("progressive") or info.get("progression") else "baseline"].append(
            p.read_bytes())
    print(f"# machine: {C.machine()}")
    dev = torch.device("cuda")
    for name, originals in groups.items():
        if not originals:
            continue
        datas = (originals * (N // len(originals) + 1))[:N]
        raw = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        decode_jpeg(raw[:BATCH], mode=ImageReadMode.RGB, device=dev)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, N, BATCH):
            decode_jpeg(raw[i:i + BATCH], mode=ImageReadMode.RGB, device=dev)
        torch.cuda.synchronize()
        gpu_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r in raw[:128]:
            decode_jpeg(r, mode=ImageReadMode.RGB)
        cpu_rate = 128 / (time.perf_counter() - t0)
        mp = sum(map(megapixels, datas))
        print(f"{name}: {len(originals)} photos; nvJPEG batch {BATCH}: {N / gpu_s:.0f} img/s "
              f"({mp / gpu_s:.0f} MP/s); libjpeg-turbo on 1 CPU thread: {cpu_rate:.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
