#!/usr/bin/env bash
# Compare cairn against restic and borg on the reference workload
# (benches/workload.py).  See benches/README.md.
#
#   benches/compare.sh [--rows N] [--variants uniform,recent] [--seed S]
#                      [--logs K] [--log-mb M] [--runs K] [--big]
#                      [--tools restic,borg,cairn] [--keep]
#
# Default: the full-size workload, both day-1 variants, restic, borg and cairn,
# medians of 3 runs. --big adds a 1 GiB database run (uniform variant).
# Scratch space: ${BENCH_DIR:-/tmp/cairn-bench}.  Raw per-command numbers are
# appended to benches/results/compare-YYYY-MM-DD.txt.  CAIRN_BIN=/path/to/cairn
# skips `cargo build --release` and uses that binary instead.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
WORKLOAD="$SCRIPT_DIR/workload.py"
BENCH_DIR=${BENCH_DIR:-/tmp/cairn-bench}

ROWS=""            # empty = workload.py default (~256 MiB db)
VARIANTS=uniform,recent
BIG=0
BIG_ROWS=15880000  # 4x the default rows: app.db of about 1 GiB
SEED=42
NLOGS=20
LOG_MB=4
RUNS=3
TOOLS=restic,borg,cairn
KEEP=0
ORIG_ARGS="$*"

die() { echo "compare.sh: error: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --rows) ROWS=${2:?}; shift 2 ;;
    --variant|--variants) VARIANTS=${2:?}; shift 2 ;;
    --big) BIG=1; shift ;;
    --seed) SEED=${2:?}; shift 2 ;;
    --logs) NLOGS=${2:?}; shift 2 ;;
    --log-mb) LOG_MB=${2:?}; shift 2 ;;
    --runs) RUNS=${2:?}; shift 2 ;;
    --tools) TOOLS=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
IFS=, read -r -a VARIANT_LIST <<<"$VARIANTS"
for v in "${VARIANT_LIST[@]}"; do
  [[ $v == uniform || $v == recent ]] || die "--variants: '$v' is not uniform or recent"
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
[[ -z $ROWS || $ROWS =~ ^[1-9][0-9]*$ ]] || die "--rows must be a positive integer"

# Rows of the final table, in order.  "cairn" means both cairn rows.
ROWKEYS=()
IFS=, read -r -a _tools <<<"$TOOLS"
for t in "${_tools[@]}"; do
  case "$t" in
    cairn) ROWKEYS+=(cairn cairn-noenc) ;;
    cairn-noenc|restic|borg) ROWKEYS+=("$t") ;;
    *) die "unknown tool '$t' (expected restic, borg, cairn)" ;;
  esac
done
[[ ${#ROWKEYS[@]} -gt 0 ]] || die "--tools is empty"
want() { local k; for k in "${ROWKEYS[@]}"; do [[ $k == "$1"* ]] && return 0; done; return 1; }

# ------------------------------------------------------------------ setup
apt_install() {
  say "installing $* with apt-get"
  [[ $(id -u) -eq 0 ]] || die "need root to apt-get install $* (install them and retry)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >&2 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >&2; } ||
    die "apt-get install $* failed"
}

command -v python3 >/dev/null || die "python3 not found"
[[ -x /usr/bin/time ]] || apt_install time
need_pkgs=()
if want restic && ! command -v restic >/dev/null; then need_pkgs+=(restic); fi
if want borg && ! command -v borg >/dev/null; then need_pkgs+=(borgbackup); fi
[[ ${#need_pkgs[@]} -eq 0 ]] || apt_install "${need_pkgs[@]}"

CAIRN=""
if want cairn && [[ -n ${CAIRN_BIN:-} ]]; then
  CAIRN=$(command -v "$CAIRN_BIN") || die "CAIRN_BIN=$CAIRN_BIN not found"
  say "using CAIRN_BIN=$CAIRN (not building)"
elif want cairn; then
  say "building cairn (cargo build --release)"
  (cd "$ROOT" && cargo build --release >&2) || die "cargo build --release failed"
  CAIRN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn"
  [[ -x $CAIRN ]] || die "$CAIRN not found after build"
fi

export RESTIC_PASSWORD=cairn-bench-restic
export BORG_PASSPHRASE=cairn-bench-borg
export CAIRN_PASSWORD=cairn-bench-cairn
export BORG_BASE_DIR="$BENCH_DIR/borg-home"      # keep borg's cache/keys out of $HOME
export RESTIC_CACHE_DIR="$BENCH_DIR/restic-cache"
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

mkdir -p "$BENCH_DIR" "$SCRIPT_DIR/results"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
RESULTS="$SCRIPT_DIR/results/compare-$(date +%F).txt"
METRICS="$BENCH_DIR/metrics"
rm -rf "$METRICS"; mkdir -p "$METRICS"

# --------------------------------------------------------------- workload
# Generated once per row count into $BENCH_DIR/pristine (the default size) or
# $BENCH_DIR/pristine-ROWS, reused while the parameters and workload.py are
# unchanged; every run works on a fresh copy.
prepare_workload() {  # ROWS (empty = default) -> sets PRISTINE, DATA_BYTES, STAMP
  local rows=$1
  PRISTINE="$BENCH_DIR/pristine${rows:+-$rows}"
  STAMP="rows=${rows:-default} seed=$SEED logs=$NLOGS log_mb=$LOG_MB $(sha256sum "$WORKLOAD" | cut -c1-16)"
  if [[ ! -f $PRISTINE/.stamp || $(cat "$PRISTINE/.stamp") != "$STAMP" ]]; then
    rm -rf "$PRISTINE"; mkdir -p "$PRISTINE"
    say "generating workload ($STAMP)"
    local t0; t0=$(date +%s.%N)
    python3 "$WORKLOAD" init "$PRISTINE" ${rows:+--rows "$rows"} --seed "$SEED" \
      --logs "$NLOGS" --log-mb "$LOG_MB" >&2 || die "workload.py init failed"
    say "workload generated in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
    echo "$STAMP" >"$PRISTINE/.stamp"
  else
    say "reusing workload in $PRISTINE ($STAMP)"
  fi
  DATA_BYTES=$(du -sb "$PRISTINE/app" | cut -f1)
}

{
  echo "## $(date -Is) compare.sh $ORIG_ARGS"
  echo "# host=$(hostname) cpus=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg) variants=$VARIANTS big=$BIG runs=$RUNS"
  if want restic; then echo "# $(restic version)"; fi
  if want borg; then echo "# $(borg --version)"; fi
  if want cairn; then echo "# cairn $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?') ($CAIRN)"; fi
} >>"$RESULTS"

# ---------------------------------------------------------------- helpers
# timed KEY STEP CMD...: run CMD under /usr/bin/time (stdin </dev/null, output
# to a log).  Any non-zero exit aborts the whole script with the log tail.
# Adds elapsed seconds to $METRICS/KEY.RUN.STEP and tracks peak RSS.
timed() {
  local key=$1 step=$2; shift 2
  local tf="$RUNDIR/time.out" log="$RUNDIR/log.$step" rc=0
  say "[$key run $RUN] $step: $*"
  /usr/bin/time -f '%e %M' -o "$tf" "$@" </dev/null >>"$log" 2>&1 || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "compare.sh: FAILED (exit $rc) [$key run $RUN] $step: $*" >&2
    echo "---- last lines of $log ----" >&2
    tail -n 40 "$log" >&2 || true
    exit 1
  fi
  local e m
  read -r e m < <(tail -n 1 "$tf")
  [[ -n ${e:-} && -n ${m:-} ]] || die "could not parse /usr/bin/time output: $(cat "$tf")"
  printf '%s wl=%s run=%s step=%s elapsed_s=%s maxrss_kib=%s cmd=%s\n' \
    "$key" "$WL" "$RUN" "$step" "$e" "$m" "$*" >>"$RESULTS"
  add_metric "$key" "$step" "$e"
  local f
  for f in "$METRICS/$WL.$key.$RUN.rss" "$METRICS/$WL.$key.$RUN.rss_$step"; do
    if [[ ! -f $f ]] || (( m > $(cat "$f") )); then echo "$m" >"$f"; fi
  done
}

add_metric() {  # KEY STEP VALUE: accumulate (sum) into this run's metric
  local f="$METRICS/$WL.$1.$RUN.$2" old=0
  [[ -f $f ]] && old=$(cat "$f")
  awk -v a="$old" -v b="$3" 'BEGIN{printf "%.3f\n", a+b}' >"$f"
}

warm_cache() { find "$WORK/app" -type f -exec cat {} + >/dev/null; }
# The repository only: cairn's cache/ (a derived local cache of the index, rebuilt from the
# repository) is left out as restic's ($RESTIC_CACHE_DIR) and borg's ($BORG_BASE_DIR) are.
repo_bytes() { du -sb --exclude="$1/cache" "$1" | cut -f1; }

# Per-tool command sets.  $REPO, $WORK, $RESTORE are set by run_one.
do_init() {
  case "$1" in
    restic) timed "$1" init restic -r "$REPO" init ;;
    borg) timed "$1" init borg init --encryption repokey "$REPO" ;;
    cairn) timed "$1" init "$CAIRN" --repo "$REPO" init ;;
    cairn-noenc) timed "$1" init "$CAIRN" --repo "$REPO" init --encryption none ;;
  esac
}

do_backup() {  # KEY STEP(backup0|backup1) NAME(day0|day1)
  local key=$1 step=$2 name=$3
  case "$key" in
    restic) timed "$key" "$step" restic -r "$REPO" backup app ;;
    borg) timed "$key" "$step" borg create --compression zstd,3 "$REPO::$name" app ;;
    cairn|cairn-noenc)
      timed "$key" "$step" "$CAIRN" --repo "$REPO" snapshot --type db app/data/app.db
      timed "$key" "$step" "$CAIRN" --repo "$REPO" snapshot --type logs app/logs
      timed "$key" "$step" "$CAIRN" --repo "$REPO" snapshot --type config \
        app/config.json app/.env app/config ;;
  esac
}

do_restore() {
  local key=$1
  case "$key" in
    restic) timed "$key" restore restic -r "$REPO" restore latest --target "$RESTORE" ;;
    borg) (cd "$RESTORE" && timed "$key" restore borg extract "$REPO::day1") ;;
    cairn|cairn-noenc)
      local s
      for s in db logs config; do
        timed "$key" restore "$CAIRN" --repo "$REPO" restore "$s:latest" --target "$RESTORE"
      done ;;
  esac
}

do_verify() {
  local key=$1
  case "$key" in
    restic) timed "$key" verify restic -r "$REPO" check --read-data ;;
    borg) timed "$key" verify borg check --verify-data "$REPO" ;;
    cairn|cairn-noenc) timed "$key" verify "$CAIRN" --repo "$REPO" verify --read-data ;;
  esac
}

run_one() {  # KEY: one full cycle on a fresh copy of the workload and a fresh repo
  local key=$1
  RUNDIR="$BENCH_DIR/run/$WL-$key-$RUN"
  WORK="$RUNDIR/work" REPO="$RUNDIR/repo" RESTORE="$RUNDIR/restore"
  rm -rf "$RUNDIR" "$BORG_BASE_DIR" "$RESTIC_CACHE_DIR"
  mkdir -p "$WORK" "$RESTORE"
  cp -a "$PRISTINE/app" "$WORK/app"
  cd "$WORK"

  do_init "$key"
  warm_cache
  do_backup "$key" backup0 day0
  local size0; size0=$(repo_bytes "$REPO")
  add_metric "$key" repo0_mb "$(awk -v a="$size0" 'BEGIN{printf "%.3f", a/1e6}')"

  python3 "$WORKLOAD" day1 "$WORK" --variant "$VAR" --seed "$SEED" \
    >>"$RUNDIR/log.day1" 2>&1 || { cat "$RUNDIR/log.day1" >&2; die "workload.py day1 failed"; }
  warm_cache
  do_backup "$key" backup1 day1
  local size1; size1=$(repo_bytes "$REPO")
  add_metric "$key" added_mb "$(awk -v a="$size0" -v b="$size1" 'BEGIN{printf "%.3f", (b-a)/1e6}')"
  printf '%s wl=%s run=%s repo_bytes_day0=%s repo_bytes_day1=%s added_bytes=%s\n' \
    "$key" "$WL" "$RUN" "$size0" "$size1" "$((size1 - size0))" >>"$RESULTS"

  do_restore "$key"
  # Untimed sanity check: the restore must reproduce the day-1 tree.
  python3 "$WORKLOAD" check "$WORK/app" "$RESTORE" >>"$RUNDIR/log.check" 2>&1 ||
    { cat "$RUNDIR/log.check" >&2; die "[$key run $RUN] restored tree does not match source"; }

  do_verify "$key"
  cd "$BENCH_DIR"
  [[ $KEEP -eq 1 ]] || rm -rf "$RUNDIR"
}

# -------------------------------------------------------------------- run
median() {  # files... -> median of their single values
  cat "$@" 2>/dev/null | sort -g | awk '{a[NR]=$1} END{ if (NR==0) {print "nan"; exit}
    if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'
}

label() {
  case "$1" in
    cairn) echo "cairn" ;; cairn-noenc) echo "cairn (no encryption)" ;;
    restic) echo "restic" ;; borg) echo "borg" ;;
  esac
}

fmt() { awk '{ if ($1 == "nan") print "-"; else printf ($1 < 10 ? "%.2f" : "%.1f"), $1 }'; }

# The table of one workload ($WL): medians over the runs, then cairn/restic ratios.
METRIC_COLS=(backup0 repo0_mb added_mb backup1 restore verify)
RSS_COLS=(rss_backup0 rss_backup1 rss_restore rss_verify)
table() {
  local data_mib key m
  data_mib=$(awk -v b="$DATA_BYTES" 'BEGIN{printf "%.0f", b/1048576}')
  echo
  echo "### $WL: ${data_mib} MiB (app.db rows=${WL_ROWS:-default}, ${NLOGS}x${LOG_MB} MiB logs), day-1 variant $VAR, seed $SEED, $( [[ $RUNS -gt 1 ]] && echo "median of $RUNS runs" || echo "1 run")"
  echo
  echo "| tool | first backup s | repo after day 0 MB | added by day 1 MB | day-1 backup s | restore s | full verify s | RSS MiB: backup0 / backup1 / restore / verify |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for key in "${ROWKEYS[@]}"; do
    local cols=() rss=()
    for m in "${METRIC_COLS[@]}"; do cols+=("$(median "$METRICS/$WL.$key".*."$m" | fmt)"); done
    for m in "${RSS_COLS[@]}"; do rss+=("$(median "$METRICS/$WL.$key".*."$m" | awk '{printf "%.0f", $1/1024}')"); done
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$key")" "${cols[@]}" "$(IFS=/; echo "${rss[*]}" | sed 's|/| / |g')"
  done
  local c
  for c in cairn cairn-noenc; do
    want "$c" && want restic || continue
    [[ " ${ROWKEYS[*]} " == *" $c "* ]] || continue
    local ratios=()
    for m in "${METRIC_COLS[@]}" rss; do
      ratios+=("$(awk -v a="$(median "$METRICS/$WL.$c".*."$m")" -v b="$(median "$METRICS/$WL.restic".*."$m")" \
        'BEGIN{ if (b > 0 && a != "nan") printf "%.2fx", a/b; else print "-" }')")
    done
    printf '| %s / restic | %s | %s | %s | %s | %s | %s | %s (peak) |\n' "$(label "$c")" "${ratios[@]}"
  done
}

WORKLOADS=()
for v in "${VARIANT_LIST[@]}"; do WORKLOADS+=("${ROWS:-default}:$v"); done
[[ $BIG -eq 0 ]] || WORKLOADS+=("$BIG_ROWS:uniform")
for wl in "${WORKLOADS[@]}"; do
  WL_ROWS=${wl%%:*}; VAR=${wl#*:}
  [[ $WL_ROWS == default ]] && WL_ROWS=""
  WL="rows${WL_ROWS:-default}-$VAR"
  prepare_workload "$WL_ROWS"
  echo "# workload $WL: $STAMP data_bytes=$DATA_BYTES" >>"$RESULTS"
  for RUN in $(seq 1 "$RUNS"); do
    for key in "${ROWKEYS[@]}"; do
      run_one "$key"
    done
  done
  table | tee -a "$RESULTS"
done
[[ $KEEP -eq 1 ]] || rm -rf "$BORG_BASE_DIR" "$RESTIC_CACHE_DIR"
echo >>"$RESULTS"
say "raw numbers appended to $RESULTS"
