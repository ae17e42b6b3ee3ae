#!/usr/bin/env python3
"""A live writer for benches/frequent.sh: commits the reference workload's daily changes
(benches/workload.py `day1`: +2 % rows, 0.5 % of rows updated, 0.2 % deleted, over a day) as a
telemetry application would, one small transaction per simulated second.

    writer.py DB --seconds S [--variant uniform|recent] [--seed N] [--rate R] [--until-file F]

Commits S simulated seconds of changes (S = 900 is 15 minutes). `--rate R` paces them at R
simulated seconds per real second (0 = as fast as possible: the 15 minutes compressed into a few
seconds). `--until-file F`: after the S seconds, keep committing at `--rate` until F exists
(the writer that runs during a snapshot). Prints one JSON line: commits, rows inserted, updated,
deleted. Deterministic for a given seed and starting database.
"""

import argparse
import json
import os
import random
import sqlite3
import sys
import time

DAY = 86400.0
INSERT_PER_DAY = 0.02
UPDATE_PER_DAY = 0.005
DELETE_PER_DAY = 0.002
SENSORS = ["rpm", "speed", "coolant_temp", "intake_temp", "maf", "throttle", "fuel_level",
           "engine_load", "timing_adv", "o2_voltage", "fuel_pressure", "baro", "voltage", "oil_temp"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("--seconds", type=int, required=True)
    ap.add_argument("--variant", choices=["uniform", "recent"], default="uniform")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--until-file")
    a = ap.parse_args()

    rnd = random.Random(a.seed)
    c = sqlite3.connect(a.db, timeout=30, isolation_level=None)
    c.execute("PRAGMA busy_timeout=30000")
    lo, hi = c.execute("SELECT min(id), max(id) FROM readings").fetchone()
    n0 = c.execute("SELECT count(*) FROM readings").fetchone()[0]
    per_s = {k: n0 * f / DAY for k, f in
             (("ins", INSERT_PER_DAY), ("upd", UPDATE_PER_DAY), ("del", DELETE_PER_DAY))}
    owed = {k: 0.0 for k in per_s}
    ts = c.execute("SELECT max(ts) FROM readings").fetchone()[0]
    done = {"commits": 0, "inserted": 0, "updated": 0, "deleted": 0}
    t0 = time.monotonic()
    sim = 0

    def pick() -> int:
        if a.variant == "recent":
            return rnd.randint(hi - (hi - lo) // 10, hi)
        return rnd.randint(lo, hi)

    while True:
        if sim >= a.seconds and (not a.until_file or os.path.exists(a.until_file)):
            break
        for k in owed:
            owed[k] += per_s[k]
        c.execute("BEGIN IMMEDIATE")
        while owed["ins"] >= 1:
            owed["ins"] -= 1
            hi += 1
            ts += 0.25
            p = rnd.choice(SENSORS)
            c.execute("INSERT INTO readings(id, ts, pid, value, unit, raw) VALUES(?,?,?,?,?,?)",
                      (hi, ts, p, rnd.uniform(0, 100), "u", rnd.randbytes(rnd.randint(8, 16))))
            done["inserted"] += 1
        while owed["upd"] >= 1:
            owed["upd"] -= 1
            r = c.execute("UPDATE readings SET value=?, raw=? WHERE id=?",
                          (rnd.uniform(0, 100), rnd.randbytes(rnd.randint(8, 16)), pick()))
            done["updated"] += r.rowcount
        while owed["del"] >= 1:
            owed["del"] -= 1
            r = c.execute("DELETE FROM readings WHERE id=?", (pick(),))
            done["deleted"] += r.rowcount
        c.execute("COMMIT")
        done["commits"] += 1
        sim += 1
        if a.rate > 0:
            ahead = sim / a.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    done["simulated_s"] = sim
    done["real_s"] = round(time.monotonic() - t0, 3)
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
