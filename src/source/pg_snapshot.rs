//! A PostgreSQL session driven through a `psql` coprocess: the repeatable-read transaction whose
//! snapshot `pg_dump --snapshot` dumps, and the table counts and schema digest read in that same
//! snapshot (recorded at backup time, read again from the restored database by the restore test).
//!
//! `psql` rather than a Rust client: it is the same libpq as `pg_dump`, so every connection form
//! the type accepts (URL, keyword/value, service name, `.pgpass`, `PG*` variables, host lists)
//! works the same, its failures read like pg_dump's (`postgres::diagnose` sorts them), and the
//! password reaches it the way it reaches pg_dump. Each statement's answer is one JSON line,
//! followed by an `\echo` marker.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// The fact prefix of a table's row count: `pg.rows.SCHEMA.TABLE`.
pub const ROWS: &str = "pg.rows.";
/// The fact holding the schema digest.
pub const SCHEMA_HASH: &str = "pg.schema_hash";
/// The fact holding the server's version.
pub const SERVER_VERSION: &str = "pg.server_version";
/// The fact holding the number of tables counted.
pub const TABLES: &str = "pg.tables";

/// Tables counted per query.
const COUNT_BATCH: usize = 200;

/// A `psql` process taking statements on stdin.
pub struct PsqlSession {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
    marker: String,
}

impl PsqlSession {
    /// Starts `cmd` (`psql` with its connection already given) as a session; `what` names it in
    /// errors. A connection that fails shows at the first [`PsqlSession::json`].
    pub fn open(mut cmd: Command, what: &str) -> Result<PsqlSession> {
        cmd.args(["-X", "-q", "-A", "-t", "--no-password", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::Invalid(format!("cannot run {what}: {e}")))?;
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("piped"));
        let (stderr, _drain) = super::process::drain_stderr(child.stderr.take().expect("piped"));
        let marker = format!("--cairn-{:016x}--", rand::random::<u64>());
        Ok(PsqlSession { what: what.into(), child, stdin, out, stderr, marker })
    }

    /// Sends `script` (statements or psql meta-commands) and returns what it printed.
    pub fn run(&mut self, script: &str) -> Result<String> {
        let sent = match self.stdin.as_mut() {
            Some(i) => i.write_all(format!("{script}\n\\echo {}\n", self.marker).as_bytes()).and_then(|_| i.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        if sent.is_err() {
            return Err(self.failure());
        }
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            match self.out.read_line(&mut line) {
                Ok(0) | Err(_) => return Err(self.failure()),
                Ok(_) => {}
            }
            if line.trim_end() == self.marker {
                return Ok(answer);
            }
            answer.push_str(&line);
        }
    }

    /// Runs a query whose one row is one JSON value (`null` when it printed nothing).
    pub fn json(&mut self, sql: &str) -> Result<serde_json::Value> {
        let out = self.run(sql)?;
        let out = out.trim();
        if out.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(out).map_err(|e| Error::Invalid(format!("{}: unexpected answer {out:?}: {e}", self.what)))
    }

    /// Ends the session (its open transaction, if any, rolls back); fails if psql did.
    pub fn close(mut self) -> Result<()> {
        drop(self.stdin.take());
        match self.child.wait() {
            Ok(s) if s.success() => Ok(()),
            _ => Err(self.failure()),
        }
    }

    /// What psql said when it stopped: its stderr, sorted into transient (`Error::Unavailable`,
    /// retried by the runner) and permanent causes.
    fn failure(&mut self) -> Error {
        drop(self.stdin.take());
        let status = self.child.wait();
        // The stderr thread ends with the process; give it a moment to drain.
        for _ in 0..50 {
            if Arc::strong_count(&self.stderr) == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let err = String::from_utf8_lossy(&self.stderr.lock().expect("not poisoned")).trim().to_string();
        let how = match status.ok().and_then(|s| s.code()) {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".into(),
        };
        let diagnosis = super::postgres::diagnose(&err);
        let cause = match diagnosis {
            Some(d) if d.transient => format!(": {} (transient: retried)", d.cause),
            Some(d) => format!(": {} (permanent: not retried)", d.cause),
            None => String::new(),
        };
        let msg =
            format!("{} {how}{cause}{}", self.what, if err.is_empty() { String::new() } else { format!(": {err}") });
        match diagnosis {
            Some(d) if d.transient => Error::Unavailable(msg),
            _ => Error::Invalid(msg),
        }
    }
}

impl Drop for PsqlSession {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Opens the repeatable-read, read-only transaction a dump is taken in and exports its snapshot;
/// returns the snapshot's id for `pg_dump --snapshot`. The session must stay open until pg_dump
/// has imported it (that is, until the dump has been read).
pub fn begin_snapshot(s: &mut PsqlSession) -> Result<String> {
    let v = s.json(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n\
         SET LOCAL search_path = pg_catalog;\n\
         SELECT to_json(pg_export_snapshot());",
    )?;
    v.as_str().map(str::to_string).ok_or_else(|| Error::Invalid(format!("pg_export_snapshot answered {v}")))
}

/// Objects of the database's own schemas, leaving out system schemas and extension members
/// (pg_dump leaves those to `CREATE EXTENSION`).
const USER_REL: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)' \
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')";

/// The facts of the database the session is in, read in its current transaction: the server
/// version, every user table's row count (`pg.rows.SCHEMA.TABLE`) and the schema digest.
pub fn facts(s: &mut PsqlSession) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let v = s.json("SELECT to_json(current_setting('server_version'));")?;
    out.insert(SERVER_VERSION.into(), v.as_str().unwrap_or_default().to_string());
    out.insert(SCHEMA_HASH.into(), schema_hash(s)?);
    let counts = row_counts(s)?;
    out.insert(TABLES.into(), counts.len().to_string());
    for ((schema, table), n) in counts {
        out.insert(format!("{ROWS}{schema}.{table}"), n.to_string());
    }
    Ok(out)
}

/// Every user table's row count, by (schema, table).
pub fn row_counts(s: &mut PsqlSession) -> Result<BTreeMap<(String, String), u64>> {
    let tables = s.json(&format!(
        "SELECT json_agg(json_build_array(n.nspname, c.relname, format('%I.%I', n.nspname, c.relname)) \
         ORDER BY n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND {USER_REL};"
    ))?;
    let tables: Vec<(String, String, String)> =
        serde_json::from_value(if tables.is_null() { serde_json::Value::Array(Vec::new()) } else { tables })
            .map_err(|e| Error::Invalid(format!("table list: {e}")))?;
    let mut out = BTreeMap::new();
    for batch in tables.chunks(COUNT_BATCH) {
        let union = batch
            .iter()
            .enumerate()
            .map(|(i, (_, _, q))| format!("SELECT {i} AS i, count(*) AS n FROM {q}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let v = s.json(&format!("SELECT json_agg(json_build_array(i, n)) FROM ({union}) x;"))?;
        let rows: Vec<(usize, u64)> =
            serde_json::from_value(v).map_err(|e| Error::Invalid(format!("table counts: {e}")))?;
        for (i, n) in rows {
            let (schema, table, _) = &batch[i];
            out.insert((schema.clone(), table.clone()), n);
        }
    }
    Ok(out)
}

/// A digest of the schema: one line per schema, relation, column (position, type, nullability,
/// default, identity, generation), constraint, index, view definition and function signature,
/// sorted bytewise and hashed (BLAKE3, hex). Owners, privileges, OIDs and names of the database
/// itself are left out: a restore into another database (or cluster) keeps the digest. Needs
/// `search_path = pg_catalog` so that every name printed is schema-qualified.
pub fn schema_hash(s: &mut PsqlSession) -> Result<String> {
    let sql = format!(
        "SELECT json_agg(line ORDER BY line COLLATE \"C\") FROM (\
         SELECT format('schema %I', n.nspname) AS line FROM pg_namespace n \
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)' \
         UNION ALL SELECT format('relation %I.%I %s', n.nspname, c.relname, c.relkind) \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {USER_REL} \
         UNION ALL SELECT format('column %I.%I %s %I %s notnull=%s default=%s identity=%s generated=%s', \
             n.nspname, c.relname, row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname, \
             format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), \
             a.attidentity, a.attgenerated) \
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
           LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
           WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {USER_REL} \
         UNION ALL SELECT format('constraint %I.%I %I %s', n.nspname, c.relname, co.conname, pg_get_constraintdef(co.oid)) \
           FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE {USER_REL} \
         UNION ALL SELECT format('index %s', pg_get_indexdef(i.indexrelid)) \
           FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE {USER_REL} \
         UNION ALL SELECT format('view %I.%I %s', n.nspname, c.relname, pg_get_viewdef(c.oid)) \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND {USER_REL} \
         UNION ALL SELECT format('function %s returns %s', p.oid::regprocedure, format_type(p.prorettype, NULL)) \
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND NOT EXISTS (SELECT 1 FROM pg_depend d \
             WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') \
         UNION ALL SELECT format('extension %I', e.extname) FROM pg_extension e WHERE e.extname <> 'plpgsql' \
         ) x;"
    );
    let v = s.json(&sql)?;
    let lines: Vec<String> = serde_json::from_value(if v.is_null() { serde_json::Value::Array(Vec::new()) } else { v })
        .map_err(|e| Error::Invalid(format!("schema digest: {e}")))?;
    let mut h = blake3::Hasher::new();
    for l in &lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    Ok(h.finalize().to_hex().to_string())
}
