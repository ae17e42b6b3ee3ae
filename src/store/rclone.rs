//! A remote reached through the real `rclone` binary (found on PATH, or `CAIRN_RCLONE`): one
//! process per operation, and one per batch where a batch is possible (an upload of many files,
//! a download of many files, a listing of everything).
//!
//! Every failure is an error. rclone's exit codes 3 and 4 ("directory not found", "file not
//! found") are how an absent object is told from a failed read; an absent remote root lists as
//! empty (nothing was ever stored there), and any other failed listing is an error, never an
//! empty remote.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{same_name_check, short_object, FileKind, Handle, Inventory, Stat, Store};
use crate::error::{Error, Result};

/// An rclone target plus flags.
#[derive(Debug, Clone)]
pub struct RcloneStore {
    /// e.g. "gdrive:backups/obd" or ":local:/mnt/usb/obd".
    pub target: String,
    /// Extra flags from the config.
    pub flags: Vec<String>,
    /// Name used in messages.
    pub name: String,
    /// Longest a bounded operation (a whole sync) may take.
    pub time_limit: Duration,
    /// When the bounded operation under way must end: its rclone child is killed then.
    deadline: Option<Instant>,
}

/// The default bound on a whole sync: generous for a slow uplink, but a hung remote cannot hold
/// the run (and the repository lock) for ever.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(6 * 3600);

/// rclone flags a remote gets unless its own flags set them: rclone's defaults (1 min to connect,
/// 5 min of silence, each retried) let a remote that accepts and never answers hold a run for hours.
const DEFAULT_TIMEOUTS: [(&str, &str); 2] = [("--contimeout", "--contimeout=30s"), ("--timeout", "--timeout=2m")];

#[derive(Deserialize)]
struct LsEntry {
    #[serde(rename = "Path")]
    path: String,
    #[serde(rename = "Size")]
    size: i64,
    #[serde(rename = "IsDir", default)]
    is_dir: bool,
    #[serde(rename = "Hashes", default)]
    hashes: BTreeMap<String, String>,
}

/// A remote's quota as `rclone about --json` reports it; a backend leaves out what it does not
/// know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct About {
    /// Quota.
    #[serde(default)]
    pub total: Option<u64>,
    /// Used by everything on the remote.
    #[serde(default)]
    pub used: Option<u64>,
    /// Free for new files.
    #[serde(default)]
    pub free: Option<u64>,
}

/// What a failed rclone run means to the caller.
enum Failure {
    /// Exit code 3 or 4: the path does not exist.
    NotFound,
    /// Anything else, with the message to report.
    Other(Error),
}

fn rclone_bin() -> std::ffi::OsString {
    std::env::var_os("CAIRN_RCLONE").unwrap_or_else(|| "rclone".into())
}

impl RcloneStore {
    /// A remote.
    pub fn new(name: &str, target: &str, flags: &[String]) -> Self {
        RcloneStore {
            target: target.trim_end_matches('/').to_string(),
            flags: flags.to_vec(),
            name: name.into(),
            time_limit: DEFAULT_TIME_LIMIT,
            deadline: None,
        }
    }

    /// With `limit` as the bound of a whole operation instead of [`DEFAULT_TIME_LIMIT`].
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// A copy whose operations must all end within its time limit from now: the rclone process
    /// running when it passes is killed and the operation fails.
    pub fn bounded(&self) -> Self {
        RcloneStore { deadline: Some(Instant::now() + self.time_limit), ..self.clone() }
    }

    /// Whether the bound of a [`RcloneStore::bounded`] operation has passed: retrying then
    /// would only be killed at once.
    pub fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn join(&self, rel: &str) -> String {
        if self.target.ends_with(':') {
            format!("{}{rel}", self.target)
        } else {
            format!("{}/{rel}", self.target)
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(rclone_bin());
        // Pacing for Google Drive's per-second limits unless the user chose their own.
        if !self.flags.iter().any(|f| f.starts_with("--tpslimit")) {
            c.arg("--tpslimit=10");
        }
        for (flag, default) in DEFAULT_TIMEOUTS {
            if !self.flags.iter().any(|f| f == flag || f.starts_with(&format!("{flag}="))) {
                c.arg(default);
            }
        }
        c.args(&self.flags);
        c.stdin(Stdio::null());
        die_with_parent(&mut c);
        c
    }

    /// Waits for `child`, killing it once the deadline passes (then `Ok(None)`).
    fn wait(&self, child: &mut std::process::Child) -> std::io::Result<Option<std::process::ExitStatus>> {
        let Some(deadline) = self.deadline else { return child.wait().map(Some) };
        loop {
            if let Some(s) = child.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs rclone, feeding `input` on stdin when given; returns its stdout.
    fn exec(&self, mut c: Command, what: &str, input: Option<&[u8]>) -> Result<Vec<u8>, Failure> {
        let spawn_err = |e: std::io::Error| {
            Failure::Other(Error::Io {
                path: PathBuf::from("rclone"),
                err: std::io::Error::new(e.kind(), format!("cannot run rclone (is it installed?): {e}")),
            })
        };
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().map_err(spawn_err)?;
        // Input written and output read by other threads: rclone may fill its output pipes
        // before it has read all of its input, and the wait below must be able to give up.
        let writer = input.map(|bytes| {
            let mut stdin = child.stdin.take().expect("piped");
            let bytes = bytes.to_vec();
            std::thread::spawn(move || stdin.write_all(&bytes))
        });
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = self.wait(&mut child).map_err(spawn_err)?;
        let out = std::process::Output {
            status: status.unwrap_or_else(|| std::os::unix::process::ExitStatusExt::from_raw(libc::SIGKILL)),
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        if status.is_none() {
            return Err(Failure::Other(Error::Io {
                path: PathBuf::from(format!("remote {}", self.name)),
                err: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "rclone {what} killed: the operation reached its time limit of {}s (is the remote reachable? \"time_limit\" in the remote's config raises it)",
                        self.time_limit.as_secs()
                    ),
                ),
            }));
        }
        if out.status.success() {
            return Ok(out.stdout);
        }
        if matches!(out.status.code(), Some(3 | 4)) {
            return Err(Failure::NotFound);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = last[last.len().saturating_sub(3)..].join(" | ");
        // Killed by a signal from outside (an admin, the OOM killer): `Interrupted`, which a
        // sync does not retry, where other failures are worth another attempt.
        let kind = match std::os::unix::process::ExitStatusExt::signal(&out.status) {
            Some(_) => std::io::ErrorKind::Interrupted,
            None => std::io::ErrorKind::Other,
        };
        Err(Failure::Other(Error::Io {
            path: PathBuf::from(format!("remote {}", self.name)),
            err: std::io::Error::new(kind, format!("rclone {what} failed ({}): {tail}", out.status)),
        }))
    }

    /// A run where "not found" is an error like any other (uploads).
    fn run(&self, c: Command, what: &str, input: Option<&[u8]>) -> Result<Vec<u8>> {
        self.exec(c, what, input).map_err(|f| match f {
            Failure::NotFound => Error::Io {
                path: PathBuf::from(format!("remote {}", self.name)),
                err: std::io::Error::other(format!("rclone {what} failed: directory not found")),
            },
            Failure::Other(e) => e,
        })
    }

    /// A run that reads `h`: "not found" is the typed error.
    fn read(&self, c: Command, what: &str, h: Handle) -> Result<Vec<u8>> {
        self.exec(c, what, None).map_err(|f| match f {
            Failure::NotFound => Error::ObjectNotFound { what: self.location(h) },
            Failure::Other(e) => e,
        })
    }

    /// `lsjson` of `rel` ("" for the root), with paths made relative to the root. A path that
    /// does not exist lists as empty.
    fn lsjson(&self, rel: &str, recursive: bool) -> Result<Vec<(String, u64, Option<String>)>> {
        let mut c = self.command();
        c.arg("lsjson");
        if recursive {
            c.arg("--recursive");
        }
        c.args(["--files-only", "--no-mimetype", "--hash", "--hash-type", "MD5"]);
        c.arg(if rel.is_empty() { self.target.clone() } else { self.join(rel) });
        let out = match self.exec(c, "lsjson", None) {
            Ok(o) => o,
            Err(Failure::NotFound) => return Ok(Vec::new()),
            Err(Failure::Other(e)) => return Err(e),
        };
        let entries: Vec<LsEntry> = serde_json::from_slice(&out)
            .map_err(|e| Error::corrupt(format!("rclone lsjson of remote {}", self.name), e.to_string()))?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_dir)
            .map(|e| {
                let md5 = e.hashes.get("md5").or_else(|| e.hashes.get("MD5")).map(|h| h.to_ascii_lowercase());
                let path = match (rel, recursive) {
                    ("", _) => e.path,
                    (_, true) => format!("{rel}/{}", e.path),
                    // A listing of one file names just that file.
                    (_, false) => rel.to_string(),
                };
                (path, e.size.max(0) as u64, md5)
            })
            .collect())
    }

    /// `rclone about`: the remote's quota figures, each as the backend reports it; `None` when
    /// the backend does not support it (or the remote's root does not exist yet). At most
    /// `limit` long, so a remote that hangs cannot hold the run.
    pub fn about(&self, limit: Duration) -> Result<Option<About>> {
        let bounded = RcloneStore { deadline: Some(Instant::now() + limit), time_limit: limit, ..self.clone() };
        let mut c = bounded.command();
        c.args(["about", "--json"]).arg(&self.target);
        let out = match bounded.exec(c, "about", None) {
            Ok(o) => o,
            Err(Failure::NotFound) => return Ok(None),
            Err(Failure::Other(e)) if e.to_string().contains("support about") => return Ok(None),
            Err(Failure::Other(e)) => return Err(e),
        };
        serde_json::from_slice(&out)
            .map(Some)
            .map_err(|e| Error::corrupt(format!("rclone about of remote {}", self.name), e.to_string()))
    }

    fn stat(&self, h: Handle) -> Result<Option<Stat>> {
        let rel = h.rel_path();
        let name = rel.rsplit('/').next().expect("non-empty").to_string();
        let mut c = self.command();
        c.args(["lsjson", "--files-only", "--no-mimetype", "--hash", "--hash-type", "MD5"]).arg(self.join(&rel));
        let out = match self.exec(c, "lsjson", None) {
            Ok(o) => o,
            Err(Failure::NotFound) => return Ok(None),
            Err(Failure::Other(e)) => return Err(e),
        };
        let entries: Vec<LsEntry> = serde_json::from_slice(&out)
            .map_err(|e| Error::corrupt(format!("rclone lsjson of remote {}", self.name), e.to_string()))?;
        Ok(entries.into_iter().find(|e| !e.is_dir && e.path == name).map(|e| Stat {
            handle: h,
            size: e.size.max(0) as u64,
            md5: e.hashes.get("md5").or_else(|| e.hashes.get("MD5")).map(|h| h.to_ascii_lowercase()),
        }))
    }
}

/// Reads `pipe` to its end on another thread.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut v);
        }
        v
    })
}

/// Makes the rclone child die with cairn: killing cairn (even with SIGKILL) must not leave an
/// rclone upload running against the repository.
fn die_with_parent(c: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id();
        // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid), nothing
        // allocated.
        unsafe {
            c.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died before the prctl: nobody would kill this child any more.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = c;
}

impl Store for RcloneStore {
    fn location(&self, h: Handle) -> String {
        format!("remote {} file {}", self.name, h.rel_path())
    }

    /// Streams `bytes` into `rclone rcat` after checking the name is free, then confirms the
    /// upload with a listing of the new object.
    fn put(&self, h: Handle, bytes: &[u8]) -> Result<()> {
        let rel = h.rel_path();
        if let Some(s) = self.stat(h)? {
            return same_name_check(&self.location(h), s.size, bytes.len() as u64);
        }
        let mut c = self.command();
        c.arg("rcat").arg(self.join(&rel));
        self.run(c, &format!("rcat {rel}"), Some(bytes))?;
        match self.stat(h)? {
            Some(s) if s.size == bytes.len() as u64 => Ok(()),
            Some(s) => Err(Error::corrupt(
                self.location(h),
                format!("after upload: size {}, expected {}", s.size, bytes.len()),
            )),
            None => Err(Error::corrupt(self.location(h), "missing after upload")),
        }
    }

    fn get(&self, h: Handle) -> Result<Vec<u8>> {
        let rel = h.rel_path();
        let mut c = self.command();
        c.arg("cat").arg(self.join(&rel));
        self.read(c, &format!("cat {rel}"), h)
    }

    fn get_range(&self, h: Handle, offset: u64, len: usize) -> Result<Vec<u8>> {
        let rel = h.rel_path();
        let mut c = self.command();
        c.arg("cat").arg(format!("--offset={offset}")).arg(format!("--count={len}")).arg(self.join(&rel));
        let out = self.read(c, &format!("cat {rel}"), h)?;
        if out.len() != len {
            let size = self.stat(h)?.map(|s| s.size).unwrap_or(0);
            return Err(short_object(&self.location(h), offset, len, size));
        }
        Ok(out)
    }

    fn size(&self, h: Handle) -> Result<Option<u64>> {
        Ok(self.stat(h)?.map(|s| s.size))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<Stat>> {
        if kind == FileKind::Config {
            return Ok(self.stat(Handle::Config)?.into_iter().collect());
        }
        let mut out: Vec<Stat> = self
            .lsjson(kind.dir(), true)?
            .into_iter()
            .filter_map(|(path, size, md5)| {
                Handle::from_rel_path(&path).filter(|h| h.kind() == kind).map(|handle| Stat { handle, size, md5 })
            })
            .collect();
        out.sort_by_key(|s| s.handle);
        Ok(out)
    }

    /// Deletes one remote file; one that is already gone is fine.
    fn remove(&self, h: Handle) -> Result<()> {
        let rel = h.rel_path();
        let mut c = self.command();
        c.arg("deletefile").arg(self.join(&rel));
        match self.exec(c, &format!("deletefile {rel}"), None) {
            Ok(_) | Err(Failure::NotFound) => Ok(()),
            // rclone says "is a directory or doesn't exist" with a generic exit code.
            Err(Failure::Other(e)) => match self.stat(h) {
                Ok(None) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// One listing of the whole remote: objects and foreign files.
    fn inventory(&self) -> Result<Inventory> {
        let mut inv = Inventory::default();
        for (path, size, md5) in self.lsjson("", true)? {
            match Handle::from_rel_path(&path) {
                Some(handle) => inv.objects.push(Stat { handle, size, md5 }),
                None => inv.foreign.push((path, size)),
            }
        }
        Ok(inv)
    }

    /// From a local directory: one `rclone copy` of every file, never overwriting.
    fn copy_in(&self, from: &dyn Store, handles: &[Handle]) -> Result<()> {
        let Some(root) = from.local_dir() else {
            for h in handles {
                self.put(*h, &from.get(*h)?)?;
            }
            return Ok(());
        };
        if handles.is_empty() {
            return Ok(());
        }
        let list: String = handles.iter().map(|h| h.rel_path() + "\n").collect();
        let mut c = self.command();
        c.args(["copy", "--immutable", "--no-traverse", "--files-from-raw", "-"]).arg(root).arg(&self.target);
        self.run(c, "copy", Some(list.as_bytes())).map(|_| ())
    }

    /// One `rclone copy` of every file into `dir`.
    fn download_to(&self, handles: &[Handle], dir: &Path) -> Result<()> {
        if handles.is_empty() {
            return Ok(());
        }
        let list: String = handles.iter().map(|h| h.rel_path() + "\n").collect();
        let mut c = self.command();
        c.args(["copy", "--no-traverse", "--files-from-raw", "-"]).arg(&self.target).arg(dir);
        self.run(c, "copy", Some(list.as_bytes())).map(|_| ())
    }
}
