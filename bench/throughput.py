"""Throughput, side by side on the same machine and the same images (issue 5, items 1 and 2).

  (a) raw encoder forward on pre-decoded tensors at batch B ............ the limit
  (b) an idiomatic in-process batched loop: decode, preprocess, encode,
      both heads (binary MLP + zero-shot) -- what a user would write ..... the peer
  (c) the seed's per-image approach: a fresh model load per image,
      batch 1, on a small sample ........................................ the seed
  (d) verge end to end: the real `verge submit` CLI -> broker -> one real
      `verge worker` process -> database, until every image is scored ..... verge

The images are N distinct JPEGs made from the shared fields-roads photos (one pixel changed per
copy and re-encoded with the photo's own quantisation tables, so sizes stay realistic; verge
deduplicates identical files, so copies must differ). The encoder defaults to ViT-B-32 with
seeded random weights: no download, and its cost is the real model's cost.

CPU (this repo's default; a few minutes):
    .venv/bin/python bench/throughput.py                # n=300, batch 32
GPU variant (one NVIDIA GPU, no network needed):
    .venv/bin/python bench/throughput.py --device cuda --batch 256 --fp16 --n 20000
    add --embedded to use the filesystem broker + SQLite (chosen automatically when Redis or
    Postgres cannot be reached).

(d) uses Redis and Postgres at their local defaults (or VERGE_BROKER_URL / VERGE_DATABASE_URL's
server), a private queue name and a throwaway database, both removed at the end. The last line
is always ``ratios: d/b=<x> b/a=<y> d/c=<z>``. Goals (issue 5): d/b >= 0.9, b/a >= 0.8; on one
H100, (d) >= 3000 img/s.

Real weights from a file (issue 15): ``--pretrained /tmp/vit-b-32.pt`` saves the seeded random
weights there (unless the file exists), loads every part from the file, and runs (d) twice with
the same worker settings: first with ``none``, then with the file. The last line then ends in
``d_file/d_none=<w>`` (goal >= 0.9: the file's sha256 is the encoder's key, computed once).
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402  (also puts the repo on sys.path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=None,
                   help="distinct images for (b) and (d) (default 300 on CPU, 20000 on CUDA)")
    p.add_argument("--encoder", default="ViT-B-32", help="open_clip model name (default ViT-B-32)")
    p.add_argument("--pretrained", default="none",
                   help="pretrained tag or weights file; 'none' = seeded random weights (default). "
                        "A path ending in .pt/.pth/.bin/.safetensors that does not exist yet gets the "
                        "seeded random weights saved to it; with a file, (d) also runs with 'none' "
                        "and the ratio of the two is printed")
    p.add_argument("--batch", type=int, default=None,
                   help="images per forward pass, everywhere (default 32 on CPU, 256 on CUDA)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--fp16", action="store_true",
                   help="fp16 autocast for (a)-(c) on CUDA (verge's worker always uses it there)")
    p.add_argument("--chunk", type=int, default=None,
                   help="images per Celery task in (d) (default max(64, 2*batch))")
    p.add_argument("--decode-threads", type=int, default=None,
                   help="VERGE_DECODE_THREADS for the worker (default: verge's 4 on CPU, "
                        "min(16, cores) on CUDA)")
    p.add_argument("--loader-workers", type=int, default=None,
                   help="DataLoader workers of the idiomatic loop (b) (default half the cores, "
                        "1..8, on CPU; min(16, cores) on CUDA)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="pool processes of the `verge worker` in (d) (default 1 on CPU, 2 on CUDA: "
                        "one process writes a chunk to the database while the other computes)")
    p.add_argument("--gpu-decode", default="nvjpeg",
                   help="VERGE_GPU_DECODE for (d) on CUDA: nvjpeg, dali, nvimgcodec, resize or off; a "
                        "comma list runs (d) once per mode (the first one goes into the ratios)")
    p.add_argument("--d-rounds", type=int, default=1,
                   help="with a weights file: rounds of (d) with 'none' and with the file, in "
                        "alternating order; the ratio compares the means (default 1)")
    p.add_argument("--seed-n", type=int, default=4, help="images for the seed's approach (c)")
    p.add_argument("--embedded", action="store_true",
                   help="(d) with the filesystem broker + SQLite instead of Redis + Postgres")
    p.add_argument("--photos", default=None, help="folder of JPEGs to copy (default: shared fields-roads)")
    p.add_argument("--corpus", default="A", type=str.upper, choices=C.CORPORA,
                   help="A: the photos as they are, 27%% progressive (default); B: baseline JPEGs "
                        f"scaled to {C.CORPUS_B_SIDE} px on the long side (bench/README.md, Corpora)")
    p.add_argument("--only", default="abcd", help="which parts to run, e.g. 'ad' (default abcd)")
    p.add_argument("--timeout", type=float, default=1800, help="give up on (d) after this many seconds")
    a = p.parse_args(argv)
    cuda = a.device.startswith("cuda")
    if a.fp16 and not cuda:
        p.error("--fp16 needs --device cuda (fp16 on a CPU is slower, not faster)")
    a.cuda = cuda
    a.gpu_index = int(a.device.split(":")[1]) if cuda and ":" in a.device else 0
    a.weights_file = is_weights_file(a.pretrained)
    a.n = a.n or (20000 if cuda else 300)
    a.batch = a.batch or (256 if cuda else 32)
    a.chunk = a.chunk or max(64, 2 * a.batch)
    cores = os.cpu_count() or 1
    a.decode_threads = a.decode_threads or (min(16, cores) if cuda else 4)
    a.concurrency = a.concurrency or (2 if cuda else 1)
    a.gpu_decode = [m.strip() for m in a.gpu_decode.split(",") if m.strip()] if cuda else ["off"]
    if not a.gpu_decode or set(a.gpu_decode) - {"nvjpeg", "dali", "nvimgcodec", "resize", "off"}:
        p.error("--gpu-decode takes nvjpeg, dali, nvimgcodec, resize and/or off")
    a.loader_workers = (a.loader_workers if a.loader_workers is not None
                        else min(16, cores) if cuda else max(1, min(8, cores // 2)))
    return a


def is_weights_file(pretrained: str) -> bool:
    return pretrained != "none" and (os.sep in pretrained or Path(pretrained).suffix in (
        ".pt", ".pth", ".bin", ".safetensors"))


def save_random_weights(args) -> None:
    """The seeded random weights verge uses for ``none``, written to ``--pretrained`` when that
    file does not exist: the same model's cost, loaded the way real weights from a file are."""
    import torch

    from models.encoder import EncoderSpec, load_encoder

    path = Path(args.pretrained).expanduser()
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(load_encoder(EncoderSpec(args.encoder, "none"), "cpu").model.state_dict(), path)
    print(f"# saved {args.encoder}'s seeded random weights to {path} "
          f"({path.stat().st_size / 2**20:.0f} MiB)", flush=True)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(args, device):
    import torch

    return torch.autocast(device.type, dtype=torch.float16, enabled=bool(args.fp16 and args.cuda))


def load_verge_encoder(args):
    from models.encoder import EncoderSpec
    from workers.weights import load_encoder

    enc = load_encoder(EncoderSpec(args.encoder, args.pretrained), args.device)
    enc._autocast = bool(args.fp16 and args.cuda)  # (a) runs exactly as the flags say
    return enc


# --------------------------------------------------------------------------- (a) the limit
def part_a(args, enc, files) -> float:
    import torch

    from models.images import decode_image

    pool_n = max(args.batch, min(len(files), 64))
    pixels = torch.stack([enc.preprocess(decode_image(files[i % len(files)].read_bytes(),
                                                      target=enc.image_size))
                          for i in range(pool_n)]).to(enc.device)
    batches = [pixels[i:i + args.batch] for i in range(0, pool_n - args.batch + 1, args.batch)]
    steps = max(3, math.ceil(args.n / args.batch)) if not args.cuda else max(20, math.ceil(args.n / args.batch))
    for i in range(3 if args.cuda else 2):  # warm-up: allocator, kernels, autotuning
        enc.encode_batch(batches[i % len(batches)])
    sync(enc.device)
    t0 = time.perf_counter()
    for i in range(steps):
        enc.encode_batch(batches[i % len(batches)])  # returns numpy: includes the copy back
    sync(enc.device)
    dt = time.perf_counter() - t0
    rate = steps * args.batch / dt
    print(f"(a) raw encoder forward, pre-decoded tensors on {enc.device.type}, batch {args.batch}: "
          f"{rate:.1f} img/s ({steps * args.batch} images in {dt:.1f} s)", flush=True)
    return rate


def decode_capacity(args, enc, files) -> float:
    """Informational: how fast verge's decode + preprocess (``decode_image`` with draft, then the
    model's transform) runs on its own in a thread pool of the worker's size -- the most one
    worker process can feed its model, whatever the device."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from models.images import decode_image

    # copy k comes from photo k mod 153: the first 153 copies are every photo once (the small
    # fields and the 6000-px roads alike), a fair sample
    sample = files[:min(len(files), max(160, args.decode_threads * 16))]

    def prep(path):
        return enc.preprocess(decode_image(path.read_bytes(), target=enc.image_size))

    with ThreadPoolExecutor(args.decode_threads) as pool:
        t0 = time.perf_counter()
        for _ in pool.map(prep, sample):
            pass
        dt = time.perf_counter() - t0
    rate = len(sample) / dt
    print(f"    decode + preprocess alone (verge's decode_image with draft, {args.decode_threads} "
          f"threads, no model): {rate:.1f} img/s ({len(sample)} images)", flush=True)
    if args.cuda:
        # VERGE_GPU_DECODE=resize leaves only this on the CPU
        with ThreadPoolExecutor(args.decode_threads) as pool:
            t0 = time.perf_counter()
            for _ in pool.map(lambda p: decode_image(p.read_bytes(), target=enc.image_size), sample):
                pass
            dt = time.perf_counter() - t0
        print(f"    decode alone (decode_image with draft, {args.decode_threads} threads): "
              f"{len(sample) / dt:.1f} img/s", flush=True)
        if enc.device_preprocessor is not None:
            # what VERGE_GPU_DECODE=nvjpeg does instead for plain JPEGs: nvJPEG + resize on the device
            dev = enc.device_preprocessor
            datas = [p.read_bytes() for p in files[:max(args.batch * 4, 1024)]]
            for _ in range(2):  # warm-up: nvJPEG handles, kernels
                [dev.prepare(x) for x in dev.decode(datas[:args.batch])]
            sync(enc.device)
            t_dec = t_prep = 0.0
            for i in range(0, len(datas), args.batch):
                t0 = time.perf_counter()
                decoded = dev.decode(datas[i:i + args.batch])
                sync(enc.device)
                t1 = time.perf_counter()
                torch.stack([dev.prepare(x) for x in decoded])
                sync(enc.device)
                t_dec, t_prep = t_dec + t1 - t0, t_prep + time.perf_counter() - t1
            print(f"    nvJPEG decode on the device alone (batch {args.batch}): "
                  f"{len(datas) / t_dec:.1f} img/s; resize + normalise on the device: "
                  f"{len(datas) / t_prep:.1f} img/s ({len(datas)} images, bytes in memory)", flush=True)
        decoder_capacity(args, enc, files)
    return rate


def decoder_capacity(args, enc, files) -> None:
    """Informational, on CUDA: each library's batched JPEG decode on the device alone, over every
    JPEG of the corpus (progressive ones included, as VERGE_GPU_DECODE=dali/nvimgcodec hand them
    over), bytes in memory, in calls of the pipeline's DECODE_GROUP. Which one is faster decides
    the recommended mode."""
    from models.images import open_checked
    from models.jpeg_decoders import jpeg_decoder, missing_library
    from models.pipeline import DECODE_GROUP

    datas = [p.read_bytes() for p in files[:max(args.batch * 4, 1024)]]
    for mode in ("nvjpeg", "dali", "nvimgcodec"):
        if (why := missing_library(mode)) is not None:
            print(f"    {mode}: not measured ({why})", flush=True)
            continue
        try:
            dec = jpeg_decoder(mode, enc.device, args.decode_threads, DECODE_GROUP)
            mine = [d for d in datas if dec.takes(open_checked(d), d)]
            for _ in range(2):  # warm-up: handles, pipelines, kernels
                dec.decode(mine[:DECODE_GROUP])
            sync(enc.device)
            t0 = time.perf_counter()
            refused = 0
            for i in range(0, len(mine), DECODE_GROUP):
                refused += sum(x is None for x in dec.decode(mine[i:i + DECODE_GROUP]))
            sync(enc.device)
            dt = time.perf_counter() - t0
            print(f"    {mode} decode on the device alone, calls of {DECODE_GROUP}: "
                  f"{len(mine) / dt:.1f} img/s ({len(mine)} of {len(datas)} files taken, "
                  f"{refused} refused)", flush=True)
        except Exception as exc:  # a library that cannot start here: say why, measure the rest
            print(f"    {mode}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})",
                  flush=True)


# --------------------------------------------------------------------------- (b) the peer
class _Files:
    """torch Dataset of image files: open, RGB, the model's preprocess."""

    def __init__(self, files, preprocess):
        self.files, self.preprocess = files, preprocess

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.files[i]) as im:
            return self.preprocess(im.convert("RGB"))


def part_b(args, enc, files) -> float:
    """What a user of open_clip writes: a DataLoader over the files, encode, normalise, the binary
    MLP head and zero-shot on the embeddings. The model is already loaded (as verge's worker's
    is before (d) starts)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from models.heads import BinaryHead

    model, device = enc.model, enc.device
    torch.manual_seed(0)
    head = BinaryHead(enc.embedding_dim).to(device).eval()
    captions = ["this is a photo of a field", "this is a photo of a road."]
    with torch.inference_mode(), autocast(args, device):
        text = F.normalize(model.encode_text(enc.tokenizer(captions).to(device)).float(), dim=-1)
    loader = DataLoader(_Files(files, enc.preprocess), batch_size=args.batch,
                        num_workers=args.loader_workers, pin_memory=args.cuda,
                        persistent_workers=False)
    p_road, zs = [], []
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in loader:
            x = x.to(device, non_blocking=True)
            with autocast(args, device):
                feats = model.encode_image(x)
            feats = F.normalize(feats.float(), dim=-1)
            p_road.append(head(feats).cpu().numpy())
            zs.append((enc.logit_scale * feats @ text.T).softmax(dim=-1).cpu().numpy())
    sync(device)
    dt = time.perf_counter() - t0
    n = len(np.concatenate(p_road))
    rate = n / dt
    print(f"(b) idiomatic in-process loop (DataLoader, {args.loader_workers} loader workers; PIL "
          f"decode, preprocess, encode, MLP head + zero-shot), batch {args.batch}: "
          f"{rate:.1f} img/s ({n} images in {dt:.1f} s)", flush=True)
    return rate


# --------------------------------------------------------------------------- (c) the seed
def part_c(args, files, head_path: Path) -> float:
    """The method verge starts from: for every image, build CLIP and load the head, then
    preprocess that one image and score it at batch 1."""
    import open_clip
    import torch
    from PIL import Image

    import models.encoder  # noqa: F401  registers verge-tiny with open_clip
    from models.heads import BinaryHead

    sample = files[:args.seed_n]
    device = torch.device(args.device)
    logging.disable(logging.WARNING)  # open_clip's "no pretrained weights" line, once per image
    t0 = time.perf_counter()
    for path in sample:
        model, _, preprocess = open_clip.create_model_and_transforms(
            args.encoder, pretrained=None if args.pretrained == "none" else args.pretrained)
        model = model.to(device).eval()
        head = BinaryHead(model.visual.output_dim)
        head.load_state_dict(torch.load(head_path, map_location="cpu", weights_only=True)["state_dict"])
        head = head.to(device).eval()
        x = preprocess(Image.open(path).convert("RGB")).unsqueeze(0).to(device)
        with torch.no_grad():
            with autocast(args, device):
                f = model.encode_image(x)
            f = f.float() / f.float().norm(dim=-1, keepdim=True)
            float(head(f))
        del model, head
    sync(device)
    dt = time.perf_counter() - t0
    logging.disable(logging.NOTSET)
    rate = len(sample) / dt
    print(f"(c) seed's per-image approach (fresh model + head load per image, batch 1), "
          f"{len(sample)} images: {rate:.2f} img/s ({dt / len(sample):.2f} s per image)", flush=True)
    return rate


# --------------------------------------------------------------------------- (d) verge
def part_d(args, main_dir: Path, warm_dir: Path, work: Path, dim: int, gpu_decode: str = "off",
           pretrained: str | None = None) -> float:
    pretrained = args.pretrained if pretrained is None else pretrained
    embedded = args.embedded
    if not embedded and not (C.redis_available() and C.postgres_available()):
        print("# (d): Redis or Postgres not reachable at their defaults: using the embedded "
              "broker (filesystem) + SQLite", flush=True)
        embedded = True
    data = work / f"var-{gpu_decode}-{'file' if is_weights_file(pretrained) else pretrained}"
    while data.exists():  # rounds of the same configuration
        data = data.with_name(data.name + "+")
    data.mkdir()
    env, url, node, where = C.worker_services(data, "tp", embedded, {
        "VERGE_ENCODER": args.encoder, "VERGE_PRETRAINED": pretrained,
        "VERGE_DEVICE": args.device, "VERGE_BATCH_SIZE": args.batch, "VERGE_CHUNK_SIZE": args.chunk,
        "VERGE_DECODE_THREADS": args.decode_threads, "VERGE_GPU_DECODE": gpu_decode})
    C.activate_random_head(url, args.encoder, pretrained, dim, data / "models")
    t_start = time.perf_counter()
    worker = C.Worker(env, work / "worker.log", node, concurrency=args.concurrency)
    # Warm-up batch: the worker process loads its model at start, and its first chunk opens
    # connections and loads the head; (b) likewise ran on a loaded model.
    C.verge(env, "submit", str(warm_dir), "--batch", "warmup", "--json")
    n_warm = len(list(warm_dir.iterdir()))
    C.wait_until(lambda: C.batch_done(url, "warmup")[0] >= n_warm, 600, "the warm-up batch",
                 alive=worker.alive)
    ready_s = time.perf_counter() - t_start
    chunks_before = len(worker.chunk_seconds())
    received_before = len(worker.received_at())

    n = len(list(main_dir.iterdir()))
    gpu = C.GpuSampler(args.gpu_index) if args.cuda else None
    load_before = C.load()
    t0_wall = time.time()
    t0 = time.perf_counter()
    sub = subprocess.Popen([sys.executable, "-m", "verge", "submit", str(main_dir), "--batch", "main",
                            "--json"], env=env, cwd=C.REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    submit_s = None
    deadline = t0 + args.timeout
    while True:
        if submit_s is None and sub.poll() is not None:
            submit_s = time.perf_counter() - t0
            if sub.returncode != 0:
                raise SystemExit(f"bench: verge submit exited {sub.returncode}:\n{sub.stderr.read()}")
        done, total = C.batch_done(url, "main")
        if submit_s is not None and total == n and done == n:
            break
        if not worker.alive():
            raise SystemExit(f"bench: the worker died:\n{worker.tail()}")
        if time.perf_counter() > deadline:
            raise SystemExit(f"bench: (d) gave up after {args.timeout:.0f} s with {done}/{n} scored")
        time.sleep(0.05)
    dt = time.perf_counter() - t0
    gpu_line = gpu.summary() if gpu is not None else None
    submitted = json.loads(sub.stdout.read())
    from sqlalchemy import text

    from store.db import get_engine

    with get_engine(url).connect() as conn:
        failed = conn.execute(text("SELECT count(*) FROM image WHERE status = 'failed'")).scalar()
        preds = conn.execute(text("SELECT count(*), count(p_road) FROM prediction")).one()
    chunks = worker.chunk_seconds()[chunks_before:]
    received = worker.received_at()[received_before:]
    first_task = f"{received[0] - t0_wall:.1f} s" if received else "?"
    in_chunks = sum(s for _, s in chunks)
    worker.stop()
    rate = n / dt
    procs = "1 `verge worker` process" + (f" with {args.concurrency} pool processes"
                                          if args.concurrency > 1 else "")
    mode = f", VERGE_GPU_DECODE={gpu_decode}" if args.cuda else ""
    if args.weights_file:
        mode += f", VERGE_PRETRAINED={'a weights file' if is_weights_file(pretrained) else pretrained}"
    print(f"(d) verge end to end ({where}; `verge submit` -> {procs}, batch "
          f"{args.batch}, chunk {args.chunk}, {args.decode_threads} decode threads{mode}): {rate:.1f} img/s "
          f"({n} images in {dt:.1f} s)", flush=True)
    print(f"    of which: `verge submit` ran {submit_s:.1f} s ({n / submit_s:.0f} files/s incl. "
          f"CLI start; {submitted['chunks']} tasks; the first reached the worker after "
          f"{first_task}); worker busy in {len(chunks)} chunks for "
          f"{in_chunks:.1f} s ({in_chunks / dt:.0%} of the wall time); worker start + warm-up "
          f"{ready_s:.1f} s (not timed); {failed} failed; {preds[0] - n_warm} predictions, "
          f"{preds[1] - n_warm} with the head; load average {load_before} before, "
          f"{C.load()} after", flush=True)
    if gpu_line:
        print(f"    {gpu_line}", flush=True)
    return rate


def main(argv=None) -> None:
    args = parse_args(argv)
    C.install_sigterm()
    import torch

    if args.weights_file:
        save_random_weights(args)

    print(f"# machine: {C.machine()}")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; encoder "
          f"{args.encoder} (pretrained={args.pretrained}), device {args.device}"
          f"{', fp16 autocast' if args.fp16 else ''}; n={args.n}, batch={args.batch}", flush=True)
    if args.cuda and not torch.cuda.is_available():
        raise SystemExit("bench: --device cuda was asked for but torch sees no CUDA device")
    print(f"# load average at the start: {C.load()}", flush=True)
    work = C.temp_dir("verge-bench-tp-")
    # the warm-up batch must reach every pool process of (d)'s worker (one chunk each)
    n_warm = max(8, min(args.chunk, 64)) if args.concurrency == 1 else args.chunk * args.concurrency
    files = C.make_copies(args.n + n_warm, work / "all", C.photos_dir(args.photos), corpus=args.corpus)
    main_dir, warm_dir = work / "main", work / "warm"
    main_dir.mkdir()
    warm_dir.mkdir()
    for i, f in enumerate(files):  # the warm-up images are copies too, distinct from the rest
        f.rename((warm_dir if i >= args.n else main_dir) / f.name)
    main_files = sorted(main_dir.iterdir())

    rates = {}
    enc = load_verge_encoder(args)
    dim = enc.embedding_dim
    if "a" in args.only:
        rates["a"] = part_a(args, enc, main_files)
    if "a" in args.only:
        decode_capacity(args, enc, main_files)
    if "b" in args.only:
        rates["b"] = part_b(args, enc, main_files)
    del enc
    gc.collect()
    if args.cuda:
        torch.cuda.empty_cache()
    if "c" in args.only:
        from models.encoder import EncoderSpec
        from models.heads import new_binary_head, save_head

        torch.manual_seed(0)
        head_path = save_head(new_binary_head(dim, EncoderSpec(args.encoder, args.pretrained).key),
                              work / "seed-head.pt")
        rates["c"] = part_c(args, main_files, head_path)
        gc.collect()
    if "d" in args.only:
        first, *others = args.gpu_decode
        if args.weights_file:
            # the same (d) with 'none' and with the file, in rounds of alternating order (none
            # file, file none, ...) so that a machine getting busier does not favour either
            got: dict[str, list[float]] = {"none": [], "file": []}
            for r in range(args.d_rounds):
                pair = ("none", args.pretrained) if r % 2 == 0 else (args.pretrained, "none")
                for pre in pair:
                    rate = part_d(args, main_dir, warm_dir, work, dim, first, pre)
                    got["none" if pre == "none" else "file"].append(rate)
            rates["d"] = sum(got["file"]) / len(got["file"])
            rates["d_none"] = sum(got["none"]) / len(got["none"])
            if args.d_rounds > 1:
                print(f"    (d) over {args.d_rounds} rounds: with the weights file "
                      f"{', '.join(f'{x:.1f}' for x in got['file'])} img/s (mean {rates['d']:.1f}); "
                      f"with none {', '.join(f'{x:.1f}' for x in got['none'])} img/s "
                      f"(mean {rates['d_none']:.1f})", flush=True)
        else:
            rates["d"] = part_d(args, main_dir, warm_dir, work, dim, first)
        for mode in others:
            part_d(args, main_dir, warm_dir, work, dim, mode)

    print(f"# load average at the end: {C.load()} (other processes on this machine slow every part)")

    def ratio(x, y):
        return f"{rates[x] / rates[y]:.2f}" if x in rates and y in rates else "n/a"

    print(f"# goals: d/b >= 0.9, b/a >= 0.8" + ("; (d) >= 3000 img/s on one H100" if args.cuda else "")
          + ("; d_file/d_none >= 0.9 (issue 15)" if args.weights_file else ""))
    print(f"ratios: d/b={ratio('d', 'b')} b/a={ratio('b', 'a')} d/c={ratio('d', 'c')}"
          + (f" d_file/d_none={ratio('d', 'd_none')}" if args.weights_file else ""), flush=True)


if __name__ == "__main__":
    main()
