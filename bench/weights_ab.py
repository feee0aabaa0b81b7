"""A/B in one process: a worker's per-chunk work (embed_keys + Scorer.predict, which reads the
encoder's key once per image) with ViT-B-32's seeded random weights loaded as ``none`` and the
same weights loaded from a file, alternating chunk by chunk (none file, file none, ...) so a
shared machine's load falls on both alike. Complements throughput.py's ``--pretrained FILE``,
whose whole-(d) runs minutes apart are at the mercy of the load.

    .venv/bin/python bench/weights_ab.py [--file /tmp/vit-b-32.pt] [--rounds 6] [--photos DIR]

The last line is ``weights_ab: file/none=<x>`` (rate with the file over rate with none; goal
>= 0.9, issue 15).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402  (also puts the repo on sys.path)


class _Row:
    """What Scorer.predict reads of an image row."""

    def __init__(self, image_id: int, sha256: str):
        self.id, self.sha256 = image_id, sha256


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", default="/tmp/vit-b-32.pt", help="weights file (saved first if absent)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--photos", default=None)
    p.add_argument("--chunk", type=int, default=64)
    args = p.parse_args(argv)
    C.install_sigterm()
    import torch

    from models.encoder import EncoderSpec
    from workers.weights import load_encoder
    from models.pipeline import embed_keys, stack
    from verge.settings import Settings
    from workers.scoring import Scorer

    path = Path(args.file).expanduser()
    if not path.is_file():  # the seeded random weights 'none' stands for, as a file
        torch.save(load_encoder(EncoderSpec("ViT-B-32", "none"), "cpu").model.state_dict(), path)
        print(f"# saved ViT-B-32's seeded random weights to {path}", flush=True)
    print(f"# machine: {C.machine()}; load average {C.load()}", flush=True)
    photos = sorted(C.photos_dir(args.photos).rglob("*.jp*g"))[:args.chunk]
    data = {str(p): p.read_bytes() for p in photos}  # fields/ and roads/ share file names
    work = C.temp_dir("verge-bench-ab-")
    settings = Settings.from_env({"VERGE_ENCODER": "ViT-B-32", "VERGE_PRETRAINED": "none",
                                  "VERGE_DATA_DIR": str(work)})
    scorers = {name: Scorer(settings, encoder=load_encoder(EncoderSpec("ViT-B-32", pre), "cpu"))
               for name, pre in (("none", "none"), ("file", args.file))}
    times: dict[str, list[float]] = {"none": [], "file": []}
    for r in range(args.rounds):
        for name in (("none", "file") if r % 2 == 0 else ("file", "none")):
            sc = scorers[name]
            t = time.perf_counter()
            done = embed_keys(sc.encoder, list(data), data.__getitem__, batch_size=32, threads=4)
            keys = list(done.vectors)
            sc.predict([_Row(i, k) for i, k in enumerate(keys)],
                       stack([done.vectors[k] for k in keys], sc.encoder.embedding_dim), None, None)
            times[name].append(time.perf_counter() - t)
            print(f"round {r} {name}: {times[name][-1]:.1f} s for {len(data)} images", flush=True)
    mean = {k: statistics.mean(v) for k, v in times.items()}
    print(f"# mean per {len(data)}-image chunk: none {mean['none']:.1f} s, file {mean['file']:.1f} s; "
          f"load average at the end {C.load()}")
    print(f"weights_ab: file/none={mean['none'] / mean['file']:.2f}", flush=True)


if __name__ == "__main__":
    main()
