#!/usr/bin/env python3
"""Deterministic reference workload for cairn benchmarks (stdlib only).

    workload.py init DIR [--rows N] [--seed S] [--logs K] [--log-mb M] [--force]
    workload.py day1 DIR [--variant uniform|recent] [--seed S]
    workload.py check SRC_APP_DIR RESTORED_DIR

`init` creates DIR/app/ (SQLite telemetry db, text logs, config files).
`day1` mutates DIR/app in place the way one day of application use would.
`check` verifies that a restored tree matches a source app/ dir (used by
compare.sh as an untimed sanity check after each restore).

Everything derives from random.Random(seed); no clocks, no os.urandom, no
hash randomisation.  Same seed + same Python/SQLite version => same bytes.
"""

import argparse
import array
import hashlib
import json
import os
import random
import shutil
import sqlite3
import sys

# Default row count: tuned so app.db lands near 256 MiB with page_size=4096.
DEFAULT_ROWS = 3_970_000
DEFAULT_SEED = 42
BATCH = 50_000

T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z, fixed (never the wall clock)
TS_STEP = 0.25        # ~4 readings per second
DAY = 86_400

# (pid, unit, lo, hi, decimals)
PIDS = [
    ("rpm", "rpm", 650, 6200, 0),
    ("speed", "km/h", 0, 180, 0),
    ("coolant_temp", "C", 15, 105, 1),
    ("intake_temp", "C", -10, 60, 1),
    ("throttle_pos", "%", 0, 100, 2),
    ("engine_load", "%", 0, 100, 2),
    ("maf", "g/s", 1, 250, 2),
    ("fuel_level", "%", 0, 100, 1),
    ("battery_v", "V", 11.5, 14.8, 3),
    ("o2_b1s1", "V", 0.05, 0.95, 3),
    ("stft_b1", "%", -25, 25, 2),
    ("ltft_b1", "%", -25, 25, 2),
    ("baro", "kPa", 85, 104, 1),
    ("timing_adv", "deg", -10, 45, 1),
]


def seeded(seed, tag):
    # Integer-derived seed per phase: independent streams, fully deterministic.
    return random.Random(seed * 1_000_003 + tag)


def reading(rng, rid):
    pid, unit, lo, hi, dec = PIDS[rng.randrange(len(PIDS))]
    ts = round(T0 + rid * TS_STEP + rng.random() * 0.05, 3)
    value = round(rng.uniform(lo, hi), dec)
    raw = rng.randbytes(rng.randint(8, 16))
    return (rid, ts, pid, value, unit, raw)


def app_dir(d):
    return os.path.join(d, "app")


def db_path(d):
    return os.path.join(d, "app", "data", "app.db")


# ---------------------------------------------------------------- database

def create_db(path, rows, seed):
    rng = seeded(seed, 1)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA page_size=4096")
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("PRAGMA synchronous=OFF")  # generation only; not persisted
    con.execute(
        "CREATE TABLE readings(id INTEGER PRIMARY KEY, ts REAL, pid TEXT,"
        " value REAL, unit TEXT, raw BLOB)"
    )
    con.execute(
        "CREATE TABLE trips(id INTEGER PRIMARY KEY, started REAL, ended REAL,"
        " distance REAL, note TEXT)"
    )
    con.execute("BEGIN")
    ins = "INSERT INTO readings VALUES (?,?,?,?,?,?)"
    rid = 1
    while rid <= rows:
        n = min(BATCH, rows - rid + 1)
        con.executemany(ins, [reading(rng, i) for i in range(rid, rid + n)])
        rid += n
    # Index built after the bulk load (same final shape, much faster).
    con.execute("CREATE INDEX readings_ts ON readings(ts)")
    span = rows * TS_STEP
    notes = ["commute", "groceries", "school run", "weekend trip", "airport",
             "gym", "client visit", "", "", "fuel stop"]
    trips = []
    for i in range(1, 1001):
        started = round(T0 + rng.random() * span, 3)
        ended = round(started + rng.uniform(300, 7200), 3)
        trips.append((i, started, ended, round(rng.uniform(0.5, 180), 2),
                      rng.choice(notes)))
    con.executemany("INSERT INTO trips VALUES (?,?,?,?,?)", trips)
    con.execute("COMMIT")
    con.close()


def load_ids(con, lo_id=None):
    ids = array.array("q")
    q = "SELECT id FROM readings"
    args = ()
    if lo_id is not None:
        q += " WHERE id >= ?"
        args = (lo_id,)
    cur = con.execute(q + " ORDER BY id", args)
    while True:
        chunk = cur.fetchmany(100_000)
        if not chunk:
            break
        ids.extend(r[0] for r in chunk)
    return ids


def mutate_db(path, variant, seed):
    rng = seeded(seed, 101 if variant == "uniform" else 102)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=DELETE")
    (count,) = con.execute("SELECT count(*) FROM readings").fetchone()
    (min_id, max_id) = con.execute("SELECT min(id), max(id) FROM readings").fetchone()
    n_ins = round(count * 0.02)
    n_upd = round(count * 0.005)
    n_del = round(count * 0.002)
    if variant == "uniform":
        pool = load_ids(con)
    else:  # newest 10% of the id range
        pool = load_ids(con, max_id - (max_id - min_id) // 10)
    chosen = rng.sample(pool, min(len(pool), n_upd + n_del))
    upd = sorted(chosen[:n_upd])
    dele = sorted(chosen[n_upd:])
    del pool
    con.execute("BEGIN")
    con.executemany(
        "UPDATE readings SET value=?, raw=? WHERE id=?",
        [(round(rng.uniform(0, 100), 2), rng.randbytes(rng.randint(8, 16)), i)
         for i in upd],
    )
    con.executemany("DELETE FROM readings WHERE id=?", [(i,) for i in dele])
    rid = max_id + 1
    end = max_id + n_ins
    while rid <= end:
        n = min(BATCH, end - rid + 1)
        con.executemany("INSERT INTO readings VALUES (?,?,?,?,?,?)",
                        [reading(rng, i) for i in range(rid, rid + n)])
        rid += n
    (tmax,) = con.execute("SELECT max(id) FROM trips").fetchone()
    con.execute("INSERT INTO trips VALUES (?,?,?,?,?)",
                (tmax + 1, T0 + max_id * TS_STEP, T0 + max_id * TS_STEP + 1800,
                 round(rng.uniform(1, 60), 2), "day1"))
    con.execute("COMMIT")
    con.close()
    return n_ins, len(upd), len(dele)


# -------------------------------------------------------------------- logs

COMPONENTS = ["http", "db", "sync", "scheduler", "auth", "ingest", "obd",
              "gps", "cache", "uploader"]
LEVELS = ["DEBUG"] * 3 + ["INFO"] * 10 + ["WARN"] * 2 + ["ERROR"]
PATHS = ["/api/v1/readings", "/api/v1/trips", "/api/v1/status", "/healthz",
         "/api/v1/export", "/login", "/api/v1/config"]
MSGS = [
    lambda r: f"GET {r.choice(PATHS)} status={r.choice((200, 200, 200, 304, 404, 500))} dur_ms={r.randint(1, 900)} bytes={r.randint(80, 90000)}",
    lambda r: f"POST {r.choice(PATHS)} status={r.choice((201, 200, 400))} dur_ms={r.randint(2, 1500)}",
    lambda r: f"inserted {r.randint(1, 500)} readings in {r.randint(1, 80)}ms (queue={r.randint(0, 2000)})",
    lambda r: f"checkpoint pages={r.randint(1, 4000)} busy={r.randint(0, 3)} dur_ms={r.randint(1, 300)}",
    lambda r: f"sync batch id={r.getrandbits(48):012x} rows={r.randint(10, 5000)} retries={r.randint(0, 4)}",
    lambda r: f"obd pid=0x{r.randint(0, 255):02X} value={r.uniform(0, 9000):.2f} latency_us={r.randint(200, 90000)}",
    lambda r: f"gps fix lat={r.uniform(-60, 60):.6f} lon={r.uniform(-180, 180):.6f} hdop={r.uniform(0.5, 9):.1f} sats={r.randint(3, 14)}",
    lambda r: f"session user={r.randint(1, 300)} ip=10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)} ok={r.choice(('true', 'false'))}",
    lambda r: f"cache hit_ratio={r.random():.3f} entries={r.randint(0, 100000)} evicted={r.randint(0, 900)}",
    lambda r: f"upload part={r.randint(1, 64)} size={r.randint(1024, 8 << 20)} throughput_kbps={r.randint(100, 50000)}",
    lambda r: f"job {r.choice(('vacuum', 'rollup', 'prune', 'export'))} finished in {r.uniform(0.01, 60):.3f}s",
]


def fmt_ts(t):
    # Deterministic UTC formatting without time/datetime (no tz database).
    days, rem = divmod(int(t), DAY)
    ms = int(round((t - int(t)) * 1000)) % 1000
    hh, rem = divmod(rem, 3600)
    mm, ss = divmod(rem, 60)
    # civil_from_days (H. Hinnant)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y += m <= 2
    return f"{y:04d}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}.{ms:03d}Z"


def write_log_lines(f, rng, t, target_bytes):
    written = 0
    buf = []
    while written < target_bytes:
        t += rng.expovariate(8.0)
        line = (f"{fmt_ts(t)} {rng.choice(LEVELS):<5} [{rng.choice(COMPONENTS)}] "
                f"{rng.choice(MSGS)(rng)}\n")
        buf.append(line)
        written += len(line)
        if len(buf) >= 4096:
            f.write("".join(buf))
            buf.clear()
    f.write("".join(buf))
    return written


def create_logs(d, n_logs, log_mb, seed):
    logdir = os.path.join(app_dir(d), "logs")
    os.makedirs(logdir, exist_ok=True)
    for i in range(n_logs):
        rng = seeded(seed, 1000 + i)
        with open(os.path.join(logdir, f"app-{i:02d}.log"), "w", encoding="ascii", newline="\n") as f:
            write_log_lines(f, rng, T0 - (n_logs - i) * DAY, log_mb << 20)


def append_logs(d, seed):
    logdir = os.path.join(app_dir(d), "logs")
    names = sorted(n for n in os.listdir(logdir) if n.endswith(".log"))
    for i, name in enumerate(names):
        p = os.path.join(logdir, name)
        size = os.path.getsize(p)
        rng = seeded(seed, 2000 + i)
        with open(p, "a", encoding="ascii", newline="\n") as f:
            write_log_lines(f, rng, T0 + 30 * DAY + i * 3600, size // 20)
    return len(names)


# ------------------------------------------------------------------ config

def create_config(d, seed):
    rng = seeded(seed, 3)
    a = app_dir(d)
    cfg = {
        "app": "obd-logger",
        "version": "2.7.1",
        "listen": "0.0.0.0:8080",
        "database": {"path": "data/app.db", "busy_timeout_ms": 5000,
                     "checkpoint_interval_s": 300},
        "sync": {"endpoint": "https://sync.example.net/v1", "interval_s": 60,
                 "batch_rows": 2000},
        "retention_days": 365,
        "poll_interval_ms": 250,
        "device_id": f"{rng.getrandbits(64):016x}",
    }
    with open(os.path.join(a, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(a, ".env"), "w") as f:
        f.write(f"APP_ENV=production\nSECRET_KEY={rng.getrandbits(256):064x}\n"
                f"SYNC_TOKEN={rng.getrandbits(160):040x}\nLOG_LEVEL=info\n")
    cdir = os.path.join(a, "config")
    os.makedirs(cdir, exist_ok=True)
    files = {
        "logging.yaml": "level: info\nrotate:\n  max_size_mb: 4\n  keep: 20\n"
                        "outputs:\n  - file: logs/app.log\n  - stderr\n",
        "pids.yaml": "pids:\n" + "".join(
            f"  - name: {p}\n    unit: \"{u}\"\n    min: {lo}\n    max: {hi}\n"
            for p, u, lo, hi, _ in PIDS),
        "alerts.yaml": "alerts:\n" + "".join(
            f"  - pid: {rng.choice(PIDS)[0]}\n    threshold: {rng.randint(1, 500)}\n"
            f"    cooldown_s: {rng.choice((60, 300, 900))}\n" for _ in range(12)),
    }
    for name, body in files.items():
        with open(os.path.join(cdir, name), "w") as f:
            f.write(body)


def mutate_config(d, seed):
    rng = seeded(seed, 4)
    p = os.path.join(app_dir(d), "config.json")
    with open(p) as f:
        cfg = json.load(f)
    old = cfg["sync"]["interval_s"]
    new = rng.choice([v for v in (15, 30, 45, 90, 120, 300) if v != old])
    cfg["sync"]["interval_s"] = new
    with open(p, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    return old, new


# ------------------------------------------------------------------- check

def db_digest(path):
    """Logical digest of a SQLite db (content, not page layout)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    (ok,) = con.execute("PRAGMA integrity_check").fetchone()
    if ok != "ok":
        raise SystemExit(f"check: {path}: integrity_check: {ok}")
    h = hashlib.sha256()
    for (name, sql) in con.execute(
            "SELECT name, sql FROM sqlite_master ORDER BY name"):
        h.update(f"{name}\0{sql}\0".encode())
    for (t,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
        for row in con.execute(f'SELECT * FROM "{t}" ORDER BY rowid'):
            h.update(repr(row).encode())
    con.close()
    return h.hexdigest()


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check(src, restored):
    """Every file under src must exist under restored with identical content.

    The restored layout is tool-specific (restic/borg: T/app/..., cairn may
    restore flatter), so each source file is matched to the restored file
    sharing the longest path suffix.  *.db files compare logically (a tool may
    restore via SQLite's backup API, which need not be byte-identical).
    """
    src = os.path.abspath(src)
    rfiles = []
    for root, _, files in os.walk(restored):
        for n in files:
            rfiles.append(os.path.join(root, n))
    bad = 0
    n = 0
    for root, _, files in os.walk(src):
        for name in sorted(files):
            s = os.path.join(root, name)
            rel = os.path.relpath(s, src).split(os.sep)
            best, best_len = None, 0
            for r in rfiles:
                parts = r.split(os.sep)
                k = 0
                while k < len(rel) and k < len(parts) and parts[-1 - k] == rel[-1 - k]:
                    k += 1
                if k > best_len:
                    best, best_len = r, k
            n += 1
            if best is None:
                print(f"check: missing {'/'.join(rel)}", file=sys.stderr)
                bad += 1
                continue
            if name.endswith(".db"):
                same = db_digest(s) == db_digest(best)
            else:
                same = file_digest(s) == file_digest(best)
            if not same:
                print(f"check: content differs: {'/'.join(rel)} vs {best}", file=sys.stderr)
                bad += 1
    if bad:
        raise SystemExit(f"check: {bad} of {n} files missing/different")
    print(f"check: {n} files OK")


# -------------------------------------------------------------------- main

def cmd_init(a):
    app = app_dir(a.dir)
    if os.path.exists(app):
        if not a.force:
            raise SystemExit(f"{app} already exists (use --force to replace it)")
        shutil.rmtree(app)
    os.makedirs(os.path.join(app, "data"))
    create_db(db_path(a.dir), a.rows, a.seed)
    create_logs(a.dir, a.logs, a.log_mb, a.seed)
    create_config(a.dir, a.seed)
    size = os.path.getsize(db_path(a.dir))
    print(f"init: {app}: app.db {a.rows} rows, {size} bytes ({size / 2**20:.1f} MiB); "
          f"{a.logs} logs x {a.log_mb} MiB; config files")


def cmd_day1(a):
    if not os.path.exists(db_path(a.dir)):
        raise SystemExit(f"{db_path(a.dir)} not found (run init first)")
    before = os.path.getsize(db_path(a.dir))
    ins, upd, dele = mutate_db(db_path(a.dir), a.variant, a.seed)
    nlogs = append_logs(a.dir, a.seed)
    old, new = mutate_config(a.dir, a.seed)
    after = os.path.getsize(db_path(a.dir))
    print(f"day1 ({a.variant}): +{ins} rows, {upd} updated, {dele} deleted; "
          f"app.db {before} -> {after} bytes; {nlogs} logs +5%; "
          f"config.json sync.interval_s {old} -> {new}")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("init", help="create DIR/app")
    pi.add_argument("dir")
    pi.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    pi.add_argument("--seed", type=int, default=DEFAULT_SEED)
    pi.add_argument("--logs", type=int, default=20, help="number of log files")
    pi.add_argument("--log-mb", type=int, default=4, help="size of each log file (MiB)")
    pi.add_argument("--force", action="store_true", help="replace an existing DIR/app")
    pd = sub.add_parser("day1", help="apply one day of changes to DIR/app")
    pd.add_argument("dir")
    pd.add_argument("--variant", choices=("uniform", "recent"), default="uniform")
    pd.add_argument("--seed", type=int, default=DEFAULT_SEED)
    pc = sub.add_parser("check", help="compare a restored tree with a source app dir")
    pc.add_argument("src")
    pc.add_argument("restored")
    a = p.parse_args()
    if a.cmd == "init":
        if a.rows < 1 or a.logs < 0 or a.log_mb < 0:
            p.error("--rows must be >= 1, --logs/--log-mb >= 0")
        cmd_init(a)
    elif a.cmd == "day1":
        cmd_day1(a)
    else:
        check(a.src, a.restored)


if __name__ == "__main__":
    main()
