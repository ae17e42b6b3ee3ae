//! The PostgreSQL restore test: the latest dump of each PostgreSQL type is loaded into a
//! temporary database (on the type's own server when its role may create databases, else in a
//! scratch cluster started from the local server binaries), and its schema digest and every
//! table's row count are compared with what the backup recorded in the dump's own snapshot.
//! The temporary database is dropped (the scratch cluster stopped and removed) whatever
//! happens, Ctrl-C included. A type that cannot be tested here is reported as not tested.

pub mod scratch;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::manifest::{NodeKind, Snapshot};
use crate::id::SnapshotId;
use crate::ops::verify::RestoreTest;
use crate::repo::Repo;
use crate::source::pg_snapshot::{self, PsqlSession, ROWS, SCHEMA_HASH};

/// Where a PostgreSQL dump is restored to be tested.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Place {
    /// The type's own server when its role may create databases, else a scratch cluster.
    #[default]
    Auto,
    /// A temporary database on the type's own server.
    SameServer,
    /// A scratch cluster from the local server binaries.
    Scratch,
}

/// One PostgreSQL type to test.
pub struct PgTarget {
    /// `psql` connected to the type's server (`None`: the type is no longer configured).
    pub connect: Option<Box<dyn Fn() -> Command>>,
    /// Where to restore.
    pub place: Place,
}

/// What the PostgreSQL restore tests need from the configuration.
#[derive(Default)]
pub struct PgPlan {
    /// By type name; a type with snapshots but not listed is tested in a scratch cluster.
    pub types: BTreeMap<String, PgTarget>,
    /// The server binaries for scratch clusters (`None`: looked up).
    pub server_bin: Option<PathBuf>,
}

/// Set by SIGINT / SIGTERM while the tests run: the restore stops and the guards clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches SIGINT and SIGTERM for its lifetime, so that an interrupted test still drops its
/// temporary database or scratch cluster; the default handling is put back afterwards.
struct SignalGuard;

impl SignalGuard {
    fn install() -> SignalGuard {
        INTERRUPTED.store(false, Ordering::SeqCst);
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        }
        SignalGuard
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // SAFETY: restoring the default disposition.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
        }
    }
}

fn interrupted() -> Error {
    Error::Invalid("restore test interrupted (the temporary database was removed)".into())
}

/// Restore-tests the latest snapshot of every PostgreSQL type. Errors only when the repository
/// cannot be read; each type's outcome (passed, failed, not tested) is in its [`RestoreTest`].
pub fn pg_restore_tests(repo: &Repo, plan: &PgPlan) -> Result<Vec<RestoreTest>> {
    let _lock = crate::store::lock::Lock::acquire(repo.store(), false, "verify --restore-test")?;
    let (snaps, _) = repo.snapshots()?;
    let mut latest: BTreeMap<String, (SnapshotId, Snapshot)> = BTreeMap::new();
    for (id, s) in snaps {
        if s.source.contains_key("postgres.format") {
            latest.insert(s.backup_type.clone(), (id, s));
        }
    }
    let signals = SignalGuard::install();
    let mut out = Vec::new();
    for (ty, (id, s)) in latest {
        let target = plan.types.get(&ty);
        let timer = Instant::now();
        let mut t = RestoreTest {
            snapshot: id,
            backup_type: ty.clone(),
            ok: false,
            not_tested: false,
            detail: String::new(),
            bytes: 0,
            duration_s: 0.0,
            place: None,
            restore_s: None,
            compare_s: None,
        };
        match test_one(repo, &s, target, plan, &mut t) {
            Ok(detail) => {
                t.ok = true;
                t.detail = detail;
            }
            Err(Outcome::NotTested(why)) => {
                t.not_tested = true;
                t.detail = why;
            }
            Err(Outcome::Failed(e)) => t.detail = e,
        }
        t.duration_s = timer.elapsed().as_secs_f64();
        out.push(t);
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
    }
    drop(signals);
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(interrupted());
    }
    Ok(out)
}

enum Outcome {
    NotTested(String),
    Failed(String),
}

fn not_tested(e: impl std::fmt::Display) -> Outcome {
    Outcome::NotTested(e.to_string())
}

fn failed(e: impl std::fmt::Display) -> Outcome {
    Outcome::Failed(e.to_string())
}

/// Where the test database lives: a server reached through `psql` and what keeps it alive.
struct Server {
    psql: Box<dyn Fn() -> Command>,
    scratch: Option<scratch::Scratch>,
}

fn test_one(
    repo: &Repo,
    s: &Snapshot,
    target: Option<&PgTarget>,
    plan: &PgPlan,
    t: &mut RestoreTest,
) -> std::result::Result<String, Outcome> {
    if !s.source.contains_key(SCHEMA_HASH) {
        return Err(not_tested(
            "the snapshot recorded no table counts or schema digest (taken by an older cairn); the next backup records them",
        ));
    }
    let node = repo
        .tree(s)
        .map_err(failed)?
        // The dump, not the roles (`TYPE.globals.sql`) captured beside it.
        .find(|n| n.as_ref().map(|n| n.kind == NodeKind::File && !n.path.ends_with(b".globals.sql")).unwrap_or(true))
        .ok_or_else(|| failed("the snapshot holds no dump file"))?
        .map_err(failed)?;
    let place = target.map_or(Place::Scratch, |t| t.place);
    let connect = target.and_then(|t| t.connect.as_ref());
    let same_server =
        match (place, connect) {
            (Place::Scratch, _) => false,
            (Place::SameServer, None) => return Err(not_tested("the type is not configured: no server to restore on")),
            (Place::Auto, None) => false,
            (Place::SameServer, Some(c)) => match may_create_db(c) {
                Ok(true) => true,
                Ok(false) => return Err(not_tested(
                    "the type's role may not create databases (restore_test \"same-server\"; \"auto\" or \"scratch\" \
                     would use a scratch cluster)",
                )),
                Err(e) => return Err(not_tested(format!("cannot reach the type's server: {e}"))),
            },
            (Place::Auto, Some(c)) => may_create_db(c).unwrap_or(false),
        };
    let mut server = if same_server {
        let c = connect.expect("checked");
        let c: &dyn Fn() -> Command = c.as_ref();
        // The closure is borrowed for this call only; a fresh one keeps `Server` 'static.
        let base = (c)();
        Server { psql: Box::new(move || clone_command(&base)), scratch: None }
    } else {
        let bin = scratch::server_bin(plan.server_bin.as_deref()).ok_or_else(|| {
            not_tested(format!(
                "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found{}; install the server package or set \
                 backup.verify.postgres.server_bin",
                plan.server_bin.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default()
            ))
        })?;
        let cluster = scratch::Scratch::start(&bin).map_err(|e| not_tested(format!("scratch cluster: {e}")))?;
        let base = cluster.psql();
        Server { psql: Box::new(move || clone_command(&base)), scratch: Some(cluster) }
    };
    t.place = Some(if same_server { "same server" } else { "scratch cluster" }.into());
    let r = restore_and_compare(repo, s, &node, &server, t);
    if let Some(c) = server.scratch.take() {
        if let Err(e) = c.remove() {
            tracing::warn!("{e}");
        }
    }
    r
}

/// A copy of a configured command (program, arguments, environment), to start it again.
fn clone_command(c: &Command) -> Command {
    let mut n = Command::new(c.get_program());
    n.args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => n.env(k, v),
            None => n.env_remove(k),
        };
    }
    n
}

fn may_create_db(connect: &dyn Fn() -> Command) -> Result<bool> {
    let mut s = PsqlSession::open(connect(), "psql (restore test)")?;
    let v = s.json("SELECT to_json(rolcreatedb OR rolsuper) FROM pg_roles WHERE rolname = current_user;")?;
    let _ = s.close();
    Ok(v.as_bool().unwrap_or(false))
}

/// The temporary database, dropped when this goes (on every path out, a panic included).
struct TempDb<'a> {
    server: &'a Server,
    name: String,
}

impl Drop for TempDb<'_> {
    fn drop(&mut self) {
        let r = PsqlSession::open((self.server.psql)(), "psql (dropping the restore test's database)")
            .and_then(|mut s| s.run(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE);", self.name)).map(|_| s))
            .and_then(|s| s.close());
        if let Err(e) = r {
            tracing::warn!("the restore test's database {} was not dropped: {e}", self.name);
        }
    }
}

fn restore_and_compare(
    repo: &Repo,
    s: &Snapshot,
    node: &crate::format::manifest::Node,
    server: &Server,
    t: &mut RestoreTest,
) -> std::result::Result<String, Outcome> {
    let name = format!("cairn_restore_test_{}_{:08x}", std::process::id(), rand::random::<u32>());
    let restore_timer = Instant::now();
    {
        let mut admin = PsqlSession::open((server.psql)(), "psql (restore test)").map_err(not_tested)?;
        admin
            .run(&format!("CREATE DATABASE \"{name}\" TEMPLATE template0;"))
            .map_err(|e| not_tested(format!("cannot create the temporary database: {e}")))?;
        let _ = admin.close();
    }
    let db = TempDb { server, name };
    let skipped = restore(repo, node, server, &db.name, t).map_err(failed)?;
    t.restore_s = Some(restore_timer.elapsed().as_secs_f64());
    let compare_timer = Instant::now();
    let r = compare(s, server, &db.name);
    t.compare_s = Some(compare_timer.elapsed().as_secs_f64());
    drop(db);
    let (tables, rows) = r?;
    Ok(format!(
        "schema digest and {tables} tables ({rows} rows) as recorded{}",
        if skipped > 0 {
            format!("; {skipped} ownership/privilege statements naming absent roles skipped")
        } else {
            String::new()
        }
    ))
}

/// Feeds the dump to `psql` connected to the temporary database (a custom-format archive
/// through `pg_restore -f -` first). Errors naming a role absent from a scratch cluster (owners,
/// grants) are counted and tolerated; any other error fails the test. Returns how many were
/// tolerated.
fn restore(
    repo: &Repo,
    node: &crate::format::manifest::Node,
    server: &Server,
    db: &str,
    t: &mut RestoreTest,
) -> Result<usize> {
    let mut cmd = (server.psql)();
    cmd.args(["-X", "-q", "--no-password"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut psql = cmd.spawn().map_err(|e| Error::Invalid(format!("cannot run psql: {e}")))?;
    let stderr = drain(psql.stderr.take().expect("piped"));
    // psql stops a non-interactive script at a failed \connect: the dump never reaches the
    // database the session started in.
    let head = format!("\\set ON_ERROR_STOP on\n\\connect \"{db}\"\n\\set ON_ERROR_STOP off\n");
    let mut w = Router { psql: psql.stdin.take(), pg_restore: None, head: Vec::new(), decided: false };
    let wrote = w.psql.as_mut().expect("set").write_all(head.as_bytes()).map_err(|e| Error::io("psql stdin", e));
    let streamed = wrote.and_then(|_| crate::ops::restore::write_content(repo, node, &mut w));
    let flushed = streamed.and_then(|n| w.finish().map(|_| n));
    let restore_status = w.pg_restore.take();
    drop(w);
    let psql_status = psql.wait().map_err(|e| Error::io("psql", e))?;
    let psql_err = stderr.join().unwrap_or_default();
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(interrupted());
    }
    t.bytes = *flushed.as_ref().unwrap_or(&0);
    if let Some((mut c, err)) = restore_status {
        let st = c.wait().map_err(|e| Error::io("pg_restore", e))?;
        let err = err.join().unwrap_or_default();
        if !st.success() {
            return Err(Error::Invalid(format!("pg_restore failed: {}", err.trim())));
        }
    }
    flushed?;
    let (mut tolerated, mut errors) = (0usize, Vec::new());
    for l in psql_err.lines().filter(|l| l.contains("ERROR:") || l.contains("FATAL:")) {
        if l.contains("role \"") && l.contains("does not exist") {
            tolerated += 1;
        } else {
            errors.push(l.trim().to_string());
        }
    }
    if !psql_status.success() || !errors.is_empty() {
        let first = errors.first().cloned().unwrap_or_else(|| psql_err.trim().to_string());
        return Err(Error::Invalid(format!(
            "loading the dump into a fresh database failed ({} errors); first: {first}",
            errors.len().max(1)
        )));
    }
    Ok(tolerated)
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = r.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// Sends the dump to psql, or, when it starts with the custom format's "PGDMP", to
/// `pg_restore -f -` whose SQL goes on to psql. Stops at an interrupt.
struct Router {
    psql: Option<ChildStdin>,
    pg_restore: Option<(Child, std::thread::JoinHandle<String>)>,
    head: Vec<u8>,
    decided: bool,
}

impl Router {
    fn decide(&mut self) -> std::io::Result<()> {
        self.decided = true;
        if self.head.starts_with(b"PGDMP") {
            let program = std::env::var_os("CAIRN_PG_RESTORE").unwrap_or_else(|| OsString::from("pg_restore"));
            let psql_in = self.psql.take().expect("set");
            let mut c = Command::new(program)
                .args(["--no-owner", "--no-privileges", "-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::from(psql_in))
                .stderr(Stdio::piped())
                .spawn()?;
            let err = drain(c.stderr.take().expect("piped"));
            self.psql = c.stdin.take();
            self.pg_restore = Some((c, err));
        }
        let head = std::mem::take(&mut self.head);
        self.psql.as_mut().expect("set").write_all(&head)
    }

    fn finish(&mut self) -> Result<()> {
        if !self.decided {
            self.decide().map_err(|e| Error::io("psql stdin", e))?;
        }
        self.psql.take();
        Ok(())
    }
}

impl Write for Router {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"));
        }
        if !self.decided {
            self.head.extend_from_slice(buf);
            if self.head.len() >= 5 {
                self.decide()?;
            }
            return Ok(buf.len());
        }
        self.psql.as_mut().expect("set").write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.psql.as_mut() {
            Some(p) => p.flush(),
            None => Ok(()),
        }
    }
}

/// Reads the restored database's schema digest and counts and compares them with the recorded
/// facts; (tables, rows) when they agree.
fn compare(s: &Snapshot, server: &Server, db: &str) -> std::result::Result<(usize, u64), Outcome> {
    let mut session = PsqlSession::open((server.psql)(), "psql (restore test)").map_err(failed)?;
    session.run(&format!("\\connect \"{db}\"\nSET search_path = pg_catalog;")).map_err(failed)?;
    let hash = pg_snapshot::schema_hash(&mut session).map_err(failed)?;
    let counts = pg_snapshot::row_counts(&mut session).map_err(failed)?;
    let _ = session.close();
    let mut problems = Vec::new();
    let mut now: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = 0;
    for ((schema, table), n) in counts {
        rows += n;
        now.insert(format!("{schema}.{table}"), n);
    }
    for (k, v) in s.source.iter().filter(|(k, _)| k.starts_with(ROWS)) {
        let table = &k[ROWS.len()..];
        match now.remove(table) {
            None => problems.push(format!("table {table} is missing (the backup recorded {v} rows)")),
            Some(n) if n.to_string() != *v => {
                problems.push(format!("table {table} has {n} rows, the backup recorded {v}"))
            }
            Some(_) => {}
        }
    }
    for (table, n) in &now {
        problems.push(format!("table {table} ({n} rows) was not recorded by the backup"));
    }
    if s.source.get(SCHEMA_HASH) != Some(&hash) {
        problems.push("the schema digest differs from the one the backup recorded".into());
    }
    if !problems.is_empty() {
        return Err(failed(problems.join("; ")));
    }
    Ok((s.source.keys().filter(|k| k.starts_with(ROWS)).count(), rows))
}
