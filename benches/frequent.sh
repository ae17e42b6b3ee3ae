#!/usr/bin/env bash
# What a 15-minute cairn snapshot of the reference database costs under a live writer
# (issue 13 item 4). See benches/README.md, "Frequent snapshots".
#
#   benches/frequent.sh [--rows N] [--seed S] [--intervals K] [--minutes M]
#                       [--variant uniform|recent] [--rate R] [--restic]
#
# Scratch: ${BENCH_DIR:-/tmp/cairn-bench} (the pristine workload is shared with
# compare.sh). CAIRN_BIN=/path/to/cairn skips `cargo build --release`.
# Lines are appended to benches/results/frequent-YYYY-MM-DD.txt.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
WORKLOAD="$SCRIPT_DIR/workload.py"
WRITER="$SCRIPT_DIR/writer.py"
BENCH_DIR=${BENCH_DIR:-/tmp/cairn-bench}
ROWS="" SEED=42 INTERVALS=4 MINUTES=15 VARIANT=uniform RATE=60 RESTIC=0
ORIG_ARGS="$*"

die() { echo "frequent.sh: error: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rows) ROWS=${2:?}; shift 2 ;;
    --seed) SEED=${2:?}; shift 2 ;;
    --intervals) INTERVALS=${2:?}; shift 2 ;;
    --minutes) MINUTES=${2:?}; shift 2 ;;
    --variant) VARIANT=${2:?}; shift 2 ;;
    --rate) RATE=${2:?}; shift 2 ;;
    --restic) RESTIC=1; shift ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done

[[ -x /usr/bin/time ]] || { DEBIAN_FRONTEND=noninteractive apt-get install -y time >&2 || die "need /usr/bin/time"; }
if [[ $RESTIC -eq 1 ]] && ! command -v restic >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y restic >&2 || die "apt-get install restic failed"
fi
if [[ -n ${CAIRN_BIN:-} ]]; then
  CAIRN=$(command -v "$CAIRN_BIN") || die "CAIRN_BIN=$CAIRN_BIN not found"
else
  (cd "$ROOT" && cargo build --release >&2) || die "cargo build --release failed"
  CAIRN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn"
fi
export CAIRN_PASSWORD=cairn-bench-cairn RESTIC_PASSWORD=cairn-bench-restic
mkdir -p "$BENCH_DIR" "$SCRIPT_DIR/results"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
RESULTS="$SCRIPT_DIR/results/frequent-$(date +%F).txt"

# The workload of compare.sh (same stamp, so either script reuses the other's); only its
# database is used.
PRISTINE="$BENCH_DIR/pristine"
stamp="rows=${ROWS:-default} seed=$SEED logs=20 log_mb=4 $(sha256sum "$WORKLOAD" | cut -c1-16)"
if [[ ! -f $PRISTINE/.stamp || $(cat "$PRISTINE/.stamp") != "$stamp" ]]; then
  rm -rf "$PRISTINE"; mkdir -p "$PRISTINE"
  say "generating the workload ($stamp)"
  python3 "$WORKLOAD" init "$PRISTINE" ${ROWS:+--rows "$ROWS"} --seed "$SEED" --logs 20 --log-mb 4 >&2
  echo "$stamp" >"$PRISTINE/.stamp"
fi

RUNDIR="$BENCH_DIR/frequent"
rm -rf "$RUNDIR"; mkdir -p "$RUNDIR"
mkdir -p "$RUNDIR/app/data" && cp -a "$PRISTINE/app/data/app.db" "$RUNDIR/app/data/"
DB="$RUNDIR/app/data/app.db"
REPO="$RUNDIR/repo" RREPO="$RUNDIR/restic-repo"
cd "$RUNDIR"
"$CAIRN" --repo "$REPO" init >/dev/null
[[ $RESTIC -eq 0 ]] || restic -r "$RREPO" init >/dev/null
SECONDS_PER=$((MINUTES * 60))

{
  echo "## $(date -Is) frequent.sh $ORIG_ARGS"
  echo "# host=$(hostname) cpus=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg) $stamp variant=$VARIANT interval=${MINUTES}min rate=${RATE}x cairn=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
} >>"$RESULTS"

# timed LABEL CMD...: runs CMD under /usr/bin/time; prints "wall cpu rss_kib".
timed() {
  local label=$1; shift
  /usr/bin/time -f '%e %U %S %M' -o "$RUNDIR/time.out" "$@" </dev/null >>"$RUNDIR/log.$label" 2>&1 ||
    { tail -20 "$RUNDIR/log.$label" >&2; die "$label failed: $*"; }
  awk '{printf "%s %.2f %s\n", $1, $2 + $3, $4}' "$RUNDIR/time.out"
}
size() { du -sb "$1" | cut -f1; }

say "baseline snapshot (day 0)"
read -r w c m < <(timed base "$CAIRN" --repo "$REPO" snapshot --type db "$DB")
echo "interval=0 tool=cairn wall_s=$w cpu_s=$c maxrss_kib=$m repo_bytes=$(size "$REPO")" | tee -a "$RESULTS"
if [[ $RESTIC -eq 1 ]]; then
  read -r w c m < <(timed rbase restic -r "$RREPO" backup app/data/app.db)
  echo "interval=0 tool=restic wall_s=$w cpu_s=$c maxrss_kib=$m repo_bytes=$(size "$RREPO")" | tee -a "$RESULTS"
fi

for i in $(seq 1 "$INTERVALS"); do
  # The interval's writes, compressed in time (not measured).
  python3 "$WRITER" "$DB" --seconds "$SECONDS_PER" --variant "$VARIANT" --seed "$((SEED + i))" \
    >>"$RUNDIR/log.writer"
  # The snapshot runs while the writer keeps committing (at RATE simulated seconds per second).
  rm -f "$RUNDIR/stop"
  python3 "$WRITER" "$DB" --seconds 0 --rate "$RATE" --until-file "$RUNDIR/stop" \
    --variant "$VARIANT" --seed "$((SEED + 1000 + i))" >>"$RUNDIR/log.writer" &
  wpid=$!
  before=$(size "$REPO")
  read -r w c m < <(timed "snap$i" "$CAIRN" --repo "$REPO" snapshot --type db "$DB")
  after=$(size "$REPO")
  echo "interval=$i tool=cairn wall_s=$w cpu_s=$c maxrss_kib=$m added_bytes=$((after - before))" | tee -a "$RESULTS"
  if [[ $RESTIC -eq 1 ]]; then
    before=$(size "$RREPO")
    read -r w c m < <(timed "rsnap$i" restic -r "$RREPO" backup app/data/app.db)
    after=$(size "$RREPO")
    echo "interval=$i tool=restic wall_s=$w cpu_s=$c maxrss_kib=$m added_bytes=$((after - before))" | tee -a "$RESULTS"
  fi
  touch "$RUNDIR/stop"
  wait "$wpid" || die "the writer failed (see $RUNDIR/log.writer)"
done
echo "# writer: $(tail -1 "$RUNDIR/log.writer")" >>"$RESULTS"

# Medians over the intervals (interval 0, the first full snapshot, is left out).
for tool in cairn restic; do
  grep -q "^interval=[1-9][0-9]* tool=$tool " "$RESULTS" || continue
  tail -n +1 "$RESULTS" | awk -v t="$tool" -v n="$INTERVALS" '
    $0 ~ "^## " { delete rows; k = 0 }
    $1 ~ /^interval=[1-9]/ && $2 == "tool=" t { k++; rows[k] = $0 }
    END {
      for (j = 1; j <= k; j++) {
        split(rows[j], f, " ")
        for (x in f) { split(f[x], kv, "="); v[kv[1], j] = kv[2] }
      }
      printf "median over %d intervals, %s:", k, t
      split("wall_s cpu_s maxrss_kib added_bytes", keys, " ")
      for (q = 1; q <= 4; q++) {
        m = 0; for (j = 1; j <= k; j++) a[j] = v[keys[q], j]
        for (j = 1; j <= k; j++) for (l = j + 1; l <= k; l++) if (a[l] + 0 < a[j] + 0) { s = a[j]; a[j] = a[l]; a[l] = s }
        med = (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
        printf " %s=%s", keys[q], med
      }
      printf "\n"
    }' | tee -a "$RESULTS"
done
echo >>"$RESULTS"
cd "$BENCH_DIR" && rm -rf "$RUNDIR"
