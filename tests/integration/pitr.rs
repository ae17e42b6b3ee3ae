//! Point-in-time recovery with a real PostgreSQL: WAL archived by `wal-push` as the server's
//! `archive_command`, a `pg_basebackup` type, `restore TYPE@TIME --pgdata`, a server started on
//! the result; `wal-push` under SIGKILL and with conflicting content; `wal-fetch` of what is not
//! archived.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::sources::PgServer;
use crate::util::{repo_files, write_config, Env, Run};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// `cairn --config CFG ARGS` as the `postgres` user (the server's archive_command runs as it,
/// so the repository is its), with the server binaries on PATH.
fn cairn_pg(env: &Env, cfg: &Path, args: &[&str]) -> Run {
    let bin = crate::sources::pg_bin().unwrap();
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", "env"])
        .arg(format!("PATH={}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .arg(exe(env))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .current_dir(env.path())
        .stdin(Stdio::null());
    env.run_cmd(c)
}

/// The cairn binary where the `postgres` user can run it: a copy inside the test's folder (the
/// build's own folder may be under a home directory that user cannot enter).
fn exe(env: &Env) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = env.path().join("bin/cairn");
    if !p.exists() {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(BIN, &p).unwrap();
        std::fs::set_permissions(p.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    p
}

fn chown_postgres(p: &Path) {
    let out = Command::new("chown").args(["-R", "postgres:postgres"]).arg(p).output().unwrap();
    assert!(out.status.success(), "chown: {}", String::from_utf8_lossy(&out.stderr));
}

/// Waits (the archiver is a real process) until the server has archived `file`.
fn wait_archived(srv: &PgServer, file: &str) {
    let start = Instant::now();
    loop {
        let (last, failed) = {
            let r = srv.psql("postgres", "SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver");
            let (a, b) = r.split_once('|').unwrap();
            (a.to_string(), b.to_string())
        };
        if last.as_str() >= file {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{file} not archived (last {last}, {failed} failures)");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (recovery is a real process) until `srv` has ended recovery and accepts connections:
/// `pg_ctl -w` returns as soon as the server runs, before replay reached its target.
fn wait_promoted(srv: &PgServer) {
    let start = Instant::now();
    loop {
        let out = Command::new(srv.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-d", &srv.url("postgres", "postgres"), "-c", "SELECT pg_is_in_recovery()"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "f" {
            return;
        }
        let log = std::fs::read_to_string(srv.sock.join("server.log")).unwrap_or_default();
        assert!(start.elapsed() < Duration::from_secs(60), "recovery did not finish:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server's clock now, as an RFC 3339 time with microseconds (what recovery compares).
fn server_now(srv: &PgServer) -> String {
    srv.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
    )
}

/// Rows at known times across several WAL segments, a base backup first; restored to a time
/// between two inserts, a server started on it holds exactly the earlier rows. Retention then
/// drops the WAL no kept base backup needs, and status holds archiving to `wal_max_age`.
#[test]
fn restore_to_a_time_between_two_inserts_recovers_exactly_the_earlier_rows() {
    let env = Env::new();
    let srv = PgServer::init_with(&["--wal-segsize=1"]);
    let cfg = write_config(
        env.path(),
        serde_json::json!({
            "name": "pitr",
            "repository": "repo",
            "password_file": "cairn-password",
            "types": { "pgb": {
                "pg_basebackup": srv.url("postgres", "postgres"),
                "wal_max_age": "1h",
                "retention": { "keep_last": 1 }
            } }
        }),
    );
    chown_postgres(env.path());
    let conf = srv.data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "\nwal_level = replica\narchive_mode = on\narchive_command = '{} --config {} --quiet wal-push %p'\n",
        exe(&env).display(),
        cfg.display()
    ));
    std::fs::write(&conf, text).unwrap();
    // The repository exists before the server archives into it.
    cairn_pg(&env, &cfg, &["--kdf-memory", "1024", "init"]).ok();
    srv.launch();

    // The base backup waits for its last WAL file to be archived: wal-push runs while the
    // backup holds its lock.
    let t0 = Instant::now();
    cairn_pg(&env, &cfg, &["backup", "--now"]).ok();
    eprintln!("base backup: {:.2}s", t0.elapsed().as_secs_f64());
    let snaps = cairn_pg(&env, &cfg, &["--json", "snapshots", "--type", "pgb"]).ok().json();
    let base = &snaps.as_array().unwrap()[0]["source"];
    let start_file = base["pg_basebackup.start_wal_file"].as_str().unwrap().to_string();
    assert_eq!(base["pg_basebackup.timeline"], "1", "{base}");

    srv.psql("postgres", "CREATE TABLE t (id int PRIMARY KEY, note text)");
    let mut between = None;
    let mut last = String::new();
    for id in 1..=4 {
        srv.psql("postgres", &format!("INSERT INTO t VALUES ({id}, repeat('x', 1000))"));
        if id == 2 {
            between = Some(server_now(&srv));
        }
        last = srv.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    }
    wait_archived(&srv, &last);
    let between = between.unwrap();

    let pgdata_parent = env.path().join("restored");
    std::fs::create_dir(&pgdata_parent).unwrap();
    chown_postgres(&pgdata_parent);
    let pgdata = pgdata_parent.join("data");
    let t0 = Instant::now();
    let r = cairn_pg(&env, &cfg, &["restore", &format!("pgb@{between}"), "--pgdata", pgdata.to_str().unwrap()]).ok();
    eprintln!("restore --pgdata: {:.2}s\n{}", t0.elapsed().as_secs_f64(), r.stdout);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pgdata).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
    assert!(pgdata.join("recovery.signal").is_file());
    let auto = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("recovery_target_action = 'promote'"), "{auto}");
    assert!(auto.contains("wal-fetch --type pgb %f %p"), "{auto}");
    // Not into a directory that holds anything.
    let r = cairn_pg(&env, &cfg, &["restore", &format!("pgb@{between}"), "--pgdata", pgdata.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not empty"), "{}", r.stderr);

    let restored = PgServer::on_data(pgdata.clone(), srv.port + 1);
    let t0 = Instant::now();
    // No read-only connections during recovery: pg_ctl -w returns once it promoted.
    restored.launch_with("-c hot_standby=off -c archive_mode=off");
    wait_promoted(&restored);
    eprintln!("recovery to {between}: {:.2}s", t0.elapsed().as_secs_f64());
    assert_eq!(restored.psql("postgres", "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"), "1,2");
    assert_eq!(srv.psql("postgres", "SELECT count(*) FROM t"), "4");
    drop(restored);

    // A second base backup: keep_last 1 keeps only it, and with it the WAL from its start.
    let before: Vec<String> = wal_files(&env, &cfg);
    assert!(before.contains(&start_file), "{before:?}");
    cairn_pg(&env, &cfg, &["backup", "--now"]).ok();
    let snaps = cairn_pg(&env, &cfg, &["--json", "snapshots", "--type", "pgb"]).ok().json();
    let kept = snaps.as_array().unwrap();
    assert_eq!(kept.len(), 1);
    let new_start = kept[0]["source"]["pg_basebackup.start_wal_file"].as_str().unwrap().to_string();
    assert!(new_start > start_file);
    let after = wal_files(&env, &cfg);
    assert!(!after.is_empty());
    assert!(after.iter().all(|f| f[8..24] >= new_start[8..24]), "{new_start}: {after:?}");
    let r = cairn_pg(&env, &cfg, &["wal-fetch", &start_file, "/nonexistent/x"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    cairn_pg(&env, &cfg, &["prune"]).ok();
    cairn_pg(&env, &cfg, &["verify", "--read-data"]).ok();

    // Status: the newest WAL's age is the recovery point; two hours later archiving has stopped.
    let st = cairn_pg(&env, &cfg, &["--json", "status"]).verdict().json();
    let wal = st["types"].as_array().unwrap().iter().find(|t| t["backup_type"] == "pgb.wal").unwrap().clone();
    assert_eq!((wal["rpo_s"].as_i64(), wal["overdue"].as_bool()), (Some(3600), Some(false)), "{wal}");
    drop(srv);
    let bin = crate::sources::pg_bin().unwrap();
    let mut late = Command::new("runuser");
    late.args(["-u", "postgres", "--", "env"])
        .arg(format!("PATH={}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .arg("faketime")
        .arg("+2 hours")
        .arg(exe(&env))
        .arg("--config")
        .arg(&cfg)
        .args(["--json", "status"])
        .current_dir(env.path())
        .stdin(Stdio::null());
    crate::util::ensure_package("faketime", || crate::util::have_program("faketime"));
    let st = env.run_cmd(late).verdict().code(6).json();
    let p = st["problems"].as_array().unwrap();
    assert!(p.iter().any(|p| p["subject"] == "pgb.wal" && p["kind"] == "overdue"), "{p:?}");
}

/// The archived WAL files of `pgb`, by name.
fn wal_files(env: &Env, cfg: &Path) -> Vec<String> {
    let snaps = cairn_pg(env, cfg, &["--json", "snapshots", "--type", "pgb.wal"]).ok().json();
    let mut v: Vec<String> =
        snaps.as_array().unwrap().iter().map(|s| s["source"]["wal.file"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

fn seg(env: &Env, name: &str, data: &[u8]) -> PathBuf {
    let dir = env.path().join("pg_wal");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Same content twice is fine, other content is refused naming the file; a missing file is a
/// quiet exit 1; a push killed while it writes leaves nothing wal-fetch sees, verify is clean
/// and the retry succeeds.
#[test]
fn wal_push_is_idempotent_refuses_conflicts_and_survives_sigkill() {
    let env = Env::new();
    env.init();
    let name = "000000010000000000000007";
    let a = crate::util::prng_bytes(1, 1 << 20);
    let p = seg(&env, name, &a);
    let push = |p: &Path| env.run(&["wal-push", "--type", "pgb", p.to_str().unwrap()]);
    push(&p).ok();
    let r = push(&p).ok();
    assert!(r.stdout.contains("already archived"), "{}", r.stdout);
    let mut b = a.clone();
    b[4096] ^= 1;
    let other = env.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join(name), &b).unwrap();
    let r = push(&other.join(name));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(name) && r.stderr.contains("different content"), "{}", r.stderr);
    let out = env.path().join("fetched");
    env.run(&["wal-fetch", "--type", "pgb", name, out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(&out).unwrap(), a);

    // A fetch that fails (here: nowhere to write) exits 126, which aborts recovery; exit 1 would
    // tell PostgreSQL the archive ends here.
    let r = env.run(&["wal-fetch", "--type", "pgb", name, "/nonexistent/dir/x"]);
    assert_eq!(r.code, 126, "{}", r.stderr);
    assert!(r.stderr.contains("error:"), "{}", r.stderr);
    // Not archived: exit 1 and no error message (recovery asks past the archive's end).
    let r = env.run(&["wal-fetch", "--type", "pgb", "000000010000000000000099", out.to_str().unwrap()]);
    assert_eq!((r.code, r.stderr.as_str()), (1, ""));
    // Not a WAL file name.
    let bogus = seg(&env, "notes.txt", b"x");
    assert_eq!(push(&bogus).code, 1);

    // SIGKILL once its first pack is being written.
    let big_name = "000000010000000000000008";
    let big = crate::util::prng_bytes(2, 48 << 20);
    let bp = seg(&env, big_name, &big);
    let written = || repo_files(&env.repo(), "packs").len() + repo_files(&env.repo(), "tmp").len();
    let before = written();
    let mut c = env.cmd();
    c.args(["wal-push", "--type", "pgb", bp.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let start = Instant::now();
    while written() == before {
        assert!(child.try_wait().unwrap().is_none(), "wal-push ended before it wrote anything");
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let r = env.run(&["wal-fetch", "--type", "pgb", big_name, out.to_str().unwrap()]);
    assert_eq!(r.code, 1, "a killed push must not be visible: {}", r.stderr);
    env.run(&["verify"]).ok();
    push(&bp).ok();
    env.run(&["wal-fetch", "--type", "pgb", big_name, out.to_str().unwrap()]).ok();
    assert!(std::fs::read(&out).unwrap() == big);
    env.run(&["verify", "--read-data"]).ok();
    // Archived WAL syncs and prunes like any snapshot: nothing here is special to the store.
    assert_eq!(crate::util::snapshot_count(&env.repo()), 2);
}
