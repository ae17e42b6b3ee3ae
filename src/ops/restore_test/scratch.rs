//! A throwaway PostgreSQL cluster for the restore test: `initdb` and `pg_ctl` from the local
//! server binaries in a private temporary directory, listening on a Unix socket in it only (no
//! TCP port, so nothing to pick or collide with). Stopped and removed when dropped, whatever
//! happened.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The superuser of the scratch cluster (trust authentication, socket in a 0700 directory).
const SUPERUSER: &str = "cairn";

/// A running scratch cluster.
pub struct Scratch {
    dir: PathBuf,
    bin: PathBuf,
    /// Runs the server as this user: the server refuses to run as root.
    run_as: Option<String>,
    started: bool,
}

/// The newest server binaries: `configured`, else the newest `/usr/lib/postgresql/N/bin`, else
/// a PATH directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn server_bin(configured: Option<&Path>) -> Option<PathBuf> {
    let has = |d: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|p| d.join(p).is_file());
    if let Some(c) = configured {
        return has(c).then(|| c.to_path_buf());
    }
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let n: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has(&bin).then_some((n, bin))
        })
        .collect();
    v.sort();
    if let Some((_, b)) = v.pop() {
        return Some(b);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|d| has(d))
}

fn user_exists(name: &str) -> bool {
    let c = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: getpwnam with a valid C string; only the pointer's nullness is read.
    !unsafe { libc::getpwnam(c.as_ptr()) }.is_null()
}

impl Scratch {
    /// Creates and starts the cluster. `Err(reason)`: it cannot be had here (the caller reports
    /// the type as not tested).
    pub fn start(bin: &Path) -> std::result::Result<Scratch, String> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = if root {
            if !user_exists("postgres") {
                return Err("cairn runs as root, which the PostgreSQL server refuses, and there is no \
                            `postgres` user to run the scratch cluster as"
                    .into());
            }
            Some("postgres".to_string())
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!(
            "cairn-restore-test-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut s = Scratch { dir, bin: bin.to_path_buf(), run_as, started: false };
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o700));
        }
        if let Some(u) = &s.run_as {
            let out = Command::new("chown").arg(u).arg(&s.dir).output();
            if !out.as_ref().is_ok_and(|o| o.status.success()) {
                return Err(format!("cannot give {} to user {u}", s.dir.display()));
            }
        }
        let data = s.dir.join("data");
        let data_s = data.to_string_lossy().into_owned();
        s.server_tool(
            "initdb",
            &["-D", &data_s, "-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"],
        )?;
        let log = s.dir.join("server.log").to_string_lossy().into_owned();
        let opts = format!("-k {} -c listen_addresses='' -c fsync=off -p 5432", s.dir.display());
        let started = s.server_tool("pg_ctl", &["-D", &data_s, "-l", &log, "-o", &opts, "-w", "-t", "60", "start"]);
        // Stopped on drop from here on, even when start reported a failure after all.
        s.started = true;
        if let Err(e) = started {
            let log = std::fs::read_to_string(s.dir.join("server.log")).unwrap_or_default();
            return Err(format!("{e}{}", if log.is_empty() { String::new() } else { format!("; server log: {log}") }));
        }
        Ok(s)
    }

    fn server_tool(&self, tool: &str, args: &[&str]) -> std::result::Result<(), String> {
        let program = self.bin.join(tool);
        let mut c = match &self.run_as {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        c.args(args).current_dir(&self.dir).stdin(Stdio::null());
        let out = c.output().map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }

    /// `psql` connected to the cluster's `postgres` database.
    pub fn psql(&self) -> Command {
        let local = self.bin.join("psql");
        let mut c = Command::new(if local.is_file() { local.into_os_string() } else { "psql".into() });
        c.arg(format!("--dbname=host={} port=5432 user={SUPERUSER} dbname=postgres", self.dir.display()));
        c
    }

    /// Stops the server and removes the directory now, reporting a failure.
    pub fn remove(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let mut problem = None;
        if self.started {
            self.started = false;
            let data = self.dir.join("data").to_string_lossy().into_owned();
            if let Err(e) = self.server_tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]) {
                problem = Some(e);
            }
        }
        if self.dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                problem.get_or_insert(format!("cannot remove {}: {e}", self.dir.display()));
            }
        }
        match problem {
            Some(p) => Err(Error::Invalid(format!("scratch cluster: {p}"))),
            None => Ok(()),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("{e}");
        }
    }
}
