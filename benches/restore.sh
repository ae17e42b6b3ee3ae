#!/usr/bin/env bash
# Many-small-files benchmark (issue 10 item 15): first snapshot vs restore of a tree of
# N small files (1-4 KiB each, 1000 per directory).  See benches/README.md.
#
#   benches/restore.sh [--files N] [--runs K] [--seed S]
#
# Default N=200000.  CAIRN_BIN=/path/to/cairn uses that binary (several, separated by ':',
# are run one after the other on the same tree, e.g. main's and a branch's).  Scratch space:
# ${BENCH_DIR:-/tmp/cairn-bench-restore}.  Results are appended to
# benches/results/restore-YYYY-MM-DD.txt.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/cairn-bench-restore}
FILES=200000
RUNS=1
SEED=42

die() { echo "restore.sh: error: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }
usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --files) FILES=${2:?}; shift 2 ;;
    --runs) RUNS=${2:?}; shift 2 ;;
    --seed) SEED=${2:?}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
[[ $FILES =~ ^[1-9][0-9]*$ ]] || die "--files must be a positive integer"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"

if [[ -n ${CAIRN_BIN:-} ]]; then
  IFS=: read -r -a BINS <<<"$CAIRN_BIN"
else
  say "building cairn (cargo build --release)"
  (cd "$ROOT" && cargo build --release >&2) || die "cargo build --release failed"
  BINS=("${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn")
fi

export CAIRN_PASSWORD=cairn-bench-restore
mkdir -p "$BENCH_DIR" "$SCRIPT_DIR/results"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
RESULTS="$SCRIPT_DIR/results/restore-$(date +%F).txt"

# The tree is generated once per (files, seed) and reused.
SRC="$BENCH_DIR/src-$FILES-$SEED"
if [[ ! -f $SRC/.done ]]; then
  rm -rf "$SRC"
  say "generating $FILES files in $SRC"
  python3 - "$SRC/tree" "$FILES" "$SEED" <<'PY'
import os, random, sys
root, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%07d.txt" % i), "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 4096)))
PY
  touch "$SRC/.done"
fi

timed() {  # LABEL CMD...: prints "elapsed_s maxrss_kib"
  local tf; tf=$(mktemp)
  /usr/bin/time -f '%e %M' -o "$tf" "$@" </dev/null >"$BENCH_DIR/log" 2>&1 ||
    { tail -n 20 "$BENCH_DIR/log" >&2; die "failed: $*"; }
  tail -n 1 "$tf"; rm -f "$tf"
}

{
  echo "## $(date -Is) restore.sh --files $FILES --runs $RUNS --seed $SEED"
  echo "# host=$(hostname) cpus=$(nproc) load: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$RESULTS"
echo "| binary | files | snapshot s | restore s | restore/snapshot | restore peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|"
for bin in "${BINS[@]}"; do
  for run in $(seq 1 "$RUNS"); do
    REPO="$BENCH_DIR/repo" OUT="$BENCH_DIR/out"
    rm -rf "$REPO" "$OUT"
    "$bin" --repo "$REPO" init >/dev/null
    find "$SRC/tree" -type f -exec cat {} + >/dev/null   # warm the page cache
    read -r snap_s _ < <(cd "$SRC" && timed "$bin" --repo "$REPO" snapshot --type files tree)
    [[ -n ${snap_s:-} ]] || die "$bin: snapshot failed"
    sync
    read -r rest_s rest_rss < <(timed "$bin" --repo "$REPO" restore files:latest --target "$OUT")
    [[ -n ${rest_s:-} ]] || die "$bin: restore failed"
    # Untimed: the restored tree must be the source tree.
    diff -r "$SRC/tree" "$OUT/tree" >/dev/null || die "$bin: restored tree differs from the source"
    line=$(awk -v b="$bin" -v n="$FILES" -v s="$snap_s" -v r="$rest_s" -v m="$rest_rss" \
      'BEGIN{printf "| %s | %d | %.2f | %.2f | %.2fx | %.0f |", b, n, s, r, r/s, m/1024}')
    echo "$line"
    echo "run=$run load=$(cut -d' ' -f1-3 /proc/loadavg) $line" >>"$RESULTS"
    rm -rf "$REPO" "$OUT"
  done
done
