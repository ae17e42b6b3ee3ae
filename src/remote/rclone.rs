//! A thin wrapper over the `rclone` binary (found on PATH, or `CAIRN_RCLONE`): list with hashes,
//! upload a set of files without overwriting, download, delete. Every failure is an error; a
//! listing that fails is never taken for an empty remote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::error::{Error, Result};

/// One remote file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path relative to the remote root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// MD5 in lowercase hex, when the remote reports it.
    pub md5: Option<String>,
}

/// An rclone target plus flags.
#[derive(Debug, Clone)]
pub struct Rclone {
    /// e.g. "gdrive:backups/obd" or ":local:/mnt/usb/obd".
    pub target: String,
    /// Extra flags from the config.
    pub flags: Vec<String>,
    /// Name used in messages.
    pub name: String,
}

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

fn rclone_bin() -> std::ffi::OsString {
    std::env::var_os("CAIRN_RCLONE").unwrap_or_else(|| "rclone".into())
}

impl Rclone {
    /// A remote.
    pub fn new(name: &str, target: &str, flags: &[String]) -> Self {
        Rclone { target: target.trim_end_matches('/').to_string(), flags: flags.to_vec(), name: name.into() }
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
        c.args(&self.flags);
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, mut c: Command, what: &str) -> Result<Vec<u8>> {
        let out = c.output().map_err(|e| Error::Io {
            path: PathBuf::from("rclone"),
            err: std::io::Error::new(e.kind(), format!("cannot run rclone (is it installed?): {e}")),
        })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = last[last.len().saturating_sub(3)..].join(" | ");
            return Err(Error::Io {
                path: PathBuf::from(format!("remote {}", self.name)),
                err: std::io::Error::other(format!("rclone {what} failed ({}): {tail}", out.status)),
            });
        }
        Ok(out.stdout)
    }

    /// Every file under the remote root, with MD5 where available. A remote root that does not
    /// exist yet lists as empty only when rclone says exactly that (directory not found).
    pub fn list(&self) -> Result<Vec<RemoteFile>> {
        let mut c = self.command();
        c.args(["lsjson", "--recursive", "--files-only", "--no-mimetype", "--hash", "--hash-type", "MD5"])
            .arg(&self.target);
        let out = match self.run(c, "lsjson") {
            Ok(o) => o,
            Err(Error::Io { err: source, .. }) if source.to_string().contains("directory not found") => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e),
        };
        let entries: Vec<LsEntry> = serde_json::from_slice(&out)
            .map_err(|e| Error::corrupt(format!("rclone lsjson of remote {}", self.name), e.to_string()))?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_dir)
            .map(|e| RemoteFile {
                path: e.path,
                size: e.size.max(0) as u64,
                md5: e.hashes.get("md5").or_else(|| e.hashes.get("MD5")).map(|h| h.to_ascii_lowercase()),
            })
            .collect())
    }

    /// Uploads `files` (paths relative to `root`) in one rclone run, never overwriting.
    pub fn upload(&self, root: &Path, files: &[String], list_file: &Path) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        std::fs::write(list_file, files.join("\n") + "\n").map_err(|e| Error::io(list_file, e))?;
        let mut c = self.command();
        c.args(["copy", "--immutable", "--no-traverse", "--files-from-raw"]).arg(list_file).arg(root).arg(&self.target);
        let r = self.run(c, "copy");
        let _ = std::fs::remove_file(list_file);
        r.map(|_| ())
    }

    /// Downloads one remote file to `dest`.
    pub fn download(&self, rel: &str, dest: &Path) -> Result<()> {
        let mut c = self.command();
        c.args(["copyto"]).arg(self.join(rel)).arg(dest);
        self.run(c, &format!("copyto {rel}")).map(|_| ())
    }

    /// Downloads everything under `rel_dir` into `dest_dir`.
    pub fn download_dir(&self, rel_dir: &str, dest_dir: &Path) -> Result<()> {
        let mut c = self.command();
        c.args(["copy"]).arg(self.join(rel_dir)).arg(dest_dir);
        absent_ok(self.run(c, &format!("copy {rel_dir}")))
    }

    /// Makes local `dest_dir` an exact copy of remote `rel_dir` (extra local files removed).
    pub fn mirror_dir(&self, rel_dir: &str, dest_dir: &Path) -> Result<()> {
        let mut c = self.command();
        c.args(["sync"]).arg(self.join(rel_dir)).arg(dest_dir);
        absent_ok(self.run(c, &format!("sync {rel_dir}")))
    }

    /// Deletes one remote file.
    pub fn delete(&self, rel: &str) -> Result<()> {
        let mut c = self.command();
        c.args(["deletefile"]).arg(self.join(rel));
        self.run(c, &format!("deletefile {rel}")).map(|_| ())
    }
}

/// A directory the remote does not have (no keys in an unencrypted repository, no snapshots
/// yet) is empty, not an error; every other failure stays an error.
fn absent_ok(r: Result<Vec<u8>>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(Error::Io { err: source, .. }) if source.to_string().contains("directory not found") => Ok(()),
        Err(e) => Err(e),
    }
}
