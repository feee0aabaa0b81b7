#!/usr/bin/env bash
# Pack what the GPU variant of bench/throughput.py needs on a machine with no network and a
# stock CUDA PyTorch image (torch, torchvision, Pillow, numpy, click, tqdm already there):
# verge's other dependencies as wheels in .whl/, and the photos in shared/datasets/fields-roads.
# Both paths are git-ignored; copy the checkout over (or carry both folders), then run there:
#
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site python3 bench/throughput.py --device cuda --batch 256 --fp16 \
#       --n 20000 --embedded --gpu-decode resize,nvjpeg --concurrency 8 --decode-threads 4
#
# Usage: bench/gpu_bundle.sh [PYTHON_VERSION]   (the GPU machine's, default 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-3.12}"
wheels=(open_clip_torch ftfy wcwidth timm celery kombu billiard vine amqp click click-didyoumean
        click-repl click-plugins prompt_toolkit tzdata tzlocal python-dateutil sqlalchemy greenlet
        alembic mako flask itsdangerous blinker flask-login flask-wtf wtforms)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$py" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${wheels[@]}"
photos="../shared/datasets/fields-roads"
if [ -d "$photos" ] && [ ! -d shared/datasets/fields-roads ]; then
  mkdir -p shared/datasets && cp -r "$photos" shared/datasets/
fi
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
grep -qx '/shared/' .git/info/exclude 2>/dev/null || echo '/shared/' >> .git/info/exclude
echo "wheels in .whl/ ($(ls .whl | wc -l) files, $(du -sh .whl | cut -f1)); photos in shared/datasets/fields-roads"
